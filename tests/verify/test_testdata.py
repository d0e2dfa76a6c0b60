"""The checker agrees with every third-party history of known verdict (porcupine test data,
vendored under tests/testdata/linearizability with its licence).

Time bound: each history gets `LIMIT` seconds; on this machine every one is decided in
well under one second (all 108 in about 3 s, see benchmarks/bench_checker.py), so the limit
only guards against a regression turning into a hang.
"""

from __future__ import annotations

import pytest

from confman.verify.checker import check
from confman.verify.models import KeyValueModel, RegisterModel
from confman.verify.parsers import load_jepsen_etcd, load_kv_edn
from tests.verify.helpers import TESTDATA, assert_valid_witness

LIMIT = 20.0
ETCD = TESTDATA / "jepsen-etcd"
KV = TESTDATA / "kv"


def _verdicts() -> dict[str, str]:
    lines = (ETCD / "VERDICTS").read_text().splitlines()
    return dict(line.split() for line in lines if line.strip())


VERDICTS = _verdicts()
ETCD_EXPECTED = {"linearizable": "linearizable", "not-linearizable": "not_linearizable"}


def test_testdata_is_complete() -> None:
    # Vendored third-party data: its MIT licence and a note of its origin travel with it.
    assert "MIT License" in (TESTDATA / "LICENSE-porcupine.md").read_text()
    assert "porcupine" in (TESTDATA / "README.md").read_text()
    assert len(VERDICTS) == 102
    assert len(list(ETCD.glob("etcd_*.log"))) == 103
    assert len(list(KV.glob("*.txt"))) == 6


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_jepsen_etcd_verdict(name: str) -> None:
    model = RegisterModel()
    history = load_jepsen_etcd(ETCD / name)
    result = check(history, model, timeout=LIMIT)
    assert result.verdict == ETCD_EXPECTED[VERDICTS[name]], result.details
    if result.linearizable:
        assert_valid_witness(model, history, result.partitions[0].linearization or [])
    else:
        assert "must take effect by" in result.details


def test_etcd_095_without_verdict_terminates() -> None:
    limit = 5.0
    result = check(load_jepsen_etcd(ETCD / "etcd_095.log"), RegisterModel(), timeout=limit)
    assert result.verdict in ("linearizable", "unknown")
    assert result.elapsed < limit + 2.0


@pytest.mark.parametrize("name", sorted(p.name for p in KV.glob("*.txt")))
def test_kv_verdict(name: str) -> None:
    model = KeyValueModel()
    history = load_kv_edn(KV / name)
    result = check(history, model, timeout=LIMIT)
    expected = "linearizable" if name.endswith("-ok.txt") else "not_linearizable"
    assert result.verdict == expected, result.details
    if result.linearizable:
        assert len(result.partitions) == len({op.input[0] for op in history})
        for part in result.partitions:
            ops = [op for op in history if op.input[0] == part.key]
            assert_valid_witness(model, ops, part.linearization or [])


def test_kv_bad_exhaustive_names_every_failing_key() -> None:
    result = check(load_kv_edn(KV / "c10-bad.txt"), KeyValueModel(), LIMIT, exhaustive=True)
    failing = [p for p in result.partitions if p.verdict == "not_linearizable"]
    assert result.verdict == "not_linearizable"
    assert failing
    assert all(p.verdict != "unknown" for p in result.partitions)
    for part in failing:
        assert f"for key {part.key!r}" in result.details
