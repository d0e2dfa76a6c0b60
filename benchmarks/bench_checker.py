"""Time of the linearizability checker on every third-party history with a verdict.

Run: ``.venv/bin/python -m benchmarks.bench_checker [--rounds 3] [--timeout 60] [--slowest N]
[NAME ...]``

Histories: ``tests/testdata/linearizability`` (Jepsen etcd register logs and kv EDN
histories, third-party, MIT licence; see its README). Parsing is not timed. Each history is
checked ``--rounds`` times (default 3); the table shows the median, with the number of
operations, the verdict (``!`` marks disagreement with the known verdict), the states the
search memoised and the partitions. ``--slowest N`` prints only the N slowest rows (the
totals cover all).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confman.verify.checker import CheckResult, check
from confman.verify.history import History
from confman.verify.models import KeyValueModel, Model, RegisterModel
from confman.verify.parsers import load_jepsen_etcd, load_kv_edn

TESTDATA = Path(__file__).resolve().parents[1] / "tests" / "testdata" / "linearizability"


@dataclass
class Case:
    name: str
    history: History
    model: Model
    expected: str | None


def cases() -> list[Case]:
    etcd = TESTDATA / "jepsen-etcd"
    verdicts = dict(
        line.split() for line in (etcd / "VERDICTS").read_text().splitlines() if line.strip()
    )
    found = [
        Case(
            path.name,
            load_jepsen_etcd(path),
            RegisterModel(),
            verdicts.get(path.name, "").replace("not-", "not_") or None,
        )
        for path in sorted(etcd.glob("etcd_*.log"))
    ]
    found.extend(
        Case(
            path.name,
            load_kv_edn(path),
            KeyValueModel(),
            "linearizable" if path.stem.endswith("-ok") else "not_linearizable",
        )
        for path in sorted((TESTDATA / "kv").glob("*.txt"))
    )
    return found


@dataclass
class Row:
    name: str
    ops: int
    verdict: str
    agrees: bool
    states: int
    partitions: int
    seconds: float


def timed(run: Callable[[], CheckResult], rounds: int) -> tuple[float, CheckResult]:
    times = []
    result = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these histories (file names or stems)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per check")
    parser.add_argument("--slowest", type=int, default=0, help="print only the N slowest")
    args = parser.parse_args()

    rows: list[Row] = []
    for case in cases():
        if args.names and not {case.name, case.name.rsplit(".", 1)[0]} & set(args.names):
            continue
        seconds, result = timed(lambda c=case: check(c.history, c.model, args.timeout), args.rounds)
        rows.append(
            Row(
                name=case.name,
                ops=len(case.history),
                verdict=result.verdict,
                agrees=case.expected is None or case.expected == result.verdict,
                states=sum(p.states_explored for p in result.partitions),
                partitions=len(result.partitions),
                seconds=seconds,
            )
        )

    shown = sorted(rows, key=lambda r: -r.seconds)[: args.slowest] if args.slowest else rows
    print(f"{'history':<16} {'ops':>5} {'verdict':<17} {'states':>8} {'parts':>5} {'seconds':>8}")
    for r in shown:
        mark = " " if r.agrees else "!"
        print(
            f"{r.name:<16} {r.ops:>5} {r.verdict:<16}{mark} {r.states:>8} {r.partitions:>5} "
            f"{r.seconds:>8.4f}"
        )
    total = sum(r.seconds for r in rows)
    slowest = max((r.seconds for r in rows), default=0.0)
    wrong = sum(not r.agrees for r in rows)
    print(
        f"{len(rows)} histories, median-of-{args.rounds} total {total:.2f} s, "
        f"slowest {slowest:.3f} s, {wrong} disagreeing"
    )


if __name__ == "__main__":
    main()
