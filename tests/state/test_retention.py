"""Pruning history by policy (``retention``): the newest N versions of every key and
everything younger than the age limit stay; watches from the floor on miss nothing."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from confman.node.state.commands import (
    DeleteConfig,
    PutConfig,
    PutNamespace,
    timestamp_micros,
)
from confman.node.state.machine import StateMachine
from confman.node.state.machine_results import ApplyResult, ApplyStatus
from confman.node.state.queries import ChangeFilter, HistoryCompacted, Reader
from tests.state.logbuilder import Log, audit_rows, ts, workload


def prune(
    machine: StateMachine, at: float, keep: int, age_s: int, budget: int = 10_000
) -> ApplyResult:
    """What applying a prune entry at ``at`` seconds after T0 does (in its own transaction;
    no command carries it yet)."""
    machine.conn.execute("BEGIN IMMEDIATE")
    try:
        result = machine._prune_history(
            machine.applied_index, timestamp_micros(ts(at)), keep, age_s, budget
        )
        machine.conn.execute("COMMIT")
    except BaseException:
        machine.conn.execute("ROLLBACK")
        raise
    return result


def versions_by_key(machine: StateMachine) -> dict[int, list[tuple[int, int]]]:
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key_id, vid, ts_us in machine.conn.execute(
        "SELECT key_id, vid, ts_us FROM versions ORDER BY vid"
    ):
        found[key_id].append((vid, ts_us))
    return found


def watch_all(db: Path, since: int) -> list[dict[str, object]]:
    with Reader(db) as reader:
        return reader.watch(since, ChangeFilter(), 1_000_000).changes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pruning_keeps_the_policy_and_watches_from_the_floor_miss_nothing(
    tmp_path: Path, seed: int
) -> None:
    log = workload(seed=seed, count=600)  # entries 0.25 s apart: 150 s
    with StateMachine(tmp_path / "ref.db") as ref, StateMachine(tmp_path / "p.db") as pruned:
        ref.apply(log.entries, log.conf_states)
        pruned.apply(log.entries, log.conf_states)
        before = versions_by_key(pruned)
        result = prune(pruned, at=150, keep=3, age_s=60)
        assert result.status is ApplyStatus.COMPACTED
        cutoff = timestamp_micros(ts(90))
        after = versions_by_key(pruned)
        for key_id, kept in after.items():
            old = before[key_id]
            assert kept == old[len(old) - len(kept) :]  # a contiguous run of the newest
            gone = old[: len(old) - len(kept)]
            # the newest 3 and everything young stay (a carrier of oldValue may stay too)
            assert len(kept) >= min(3, len(old))
            assert all(ts_us < cutoff for _, ts_us in gone)
        floor = pruned.conn.execute("SELECT compacted_through FROM history").fetchone()[0]
        assert floor > 0
        assert ts(0) < ts(90)
        for since in range(floor, pruned.applied_index + 1, 7):
            assert watch_all(tmp_path / "p.db", since) == watch_all(tmp_path / "ref.db", since)
        with Reader(tmp_path / "p.db") as reader, pytest.raises(HistoryCompacted):
            reader.watch(floor - 1, ChangeFilter())
        # every retained event renders as in the unpruned database (oldValue included)
        retained = {(r[0], r[1]) for r in audit_rows(pruned)}
        assert [r for r in audit_rows(ref) if (r[0], r[1]) in retained] == audit_rows(pruned)
        # the same prune on another node gives the same state
        with StateMachine(tmp_path / "q.db") as other:
            other.apply(log.entries, log.conf_states)
            prune(other, at=150, keep=3, age_s=60)
            assert other.state_digest() == pruned.state_digest()
        # current values are never pruned
        with Reader(tmp_path / "p.db") as p, Reader(tmp_path / "ref.db") as r:
            assert p.list_all_entries() == r.list_all_entries()


def test_young_history_and_the_newest_versions_stay(tmp_path: Path) -> None:
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    for i in range(10):
        log.add(PutConfig("ns", "hot", f"v{i}"), at=i)  # at 0..9 s
    log.add(PutConfig("ns", "cold", "c"), at=0.5)
    with StateMachine(tmp_path / "s.db") as m:
        m.apply(log.entries)
        assert prune(m, at=10, keep=100, age_s=0).status is ApplyStatus.NOOP  # count protects
        assert prune(m, at=10, keep=2, age_s=5).status is ApplyStatus.COMPACTED  # age: >= 5 s
        hot = [r[8] for r in audit_rows(m) if r[6] == "hot"]
        assert hot == ["v5", "v6", "v7", "v8", "v9"]
        assert prune(m, at=100, keep=2, age_s=5).status is ApplyStatus.COMPACTED
        assert [r[8] for r in audit_rows(m) if r[6] == "hot"] == ["v8", "v9"]
        assert [r[7] for r in audit_rows(m) if r[6] == "hot"] == ["v7", "v8"]  # oldValue kept
        assert "cold" in [r[6] for r in audit_rows(m)]  # one version: within the count


def test_a_key_deleted_long_ago_loses_its_whole_history(tmp_path: Path) -> None:
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    log.add(PutConfig("ns", "old", "1"), at=1)
    log.add(DeleteConfig("ns", "old"), at=2)
    log.add(PutConfig("ns", "recent", "1"), at=50)
    log.add(DeleteConfig("ns", "recent"), at=60)
    with StateMachine(tmp_path / "s.db") as m:
        m.apply(log.entries)
        prune(m, at=70, keep=100, age_s=30)
        keys = [r[0] for r in m.conn.execute("SELECT key FROM entries ORDER BY key")]
        assert keys == ["recent"]
        assert [r[6] for r in audit_rows(m) if r[6]] == ["recent", "recent"]
        assert m.conn.execute("SELECT compacted_through FROM history").fetchone() == (3,)


def test_the_budget_bounds_one_prune_and_repeated_prunes_finish(tmp_path: Path) -> None:
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    for i in range(40):
        log.add(PutConfig("ns", f"k{i % 4}", f"v{i}"), at=i / 10)
    with StateMachine(tmp_path / "s.db") as m:
        m.apply(log.entries)
        rounds = 0
        while prune(m, at=1000, keep=1, age_s=0, budget=5).status is ApplyStatus.COMPACTED:
            rounds += 1
            assert rounds < 40
        assert rounds > 2
        assert (
            m.conn.execute("SELECT count(*) FROM events WHERE key_id IS NOT NULL").fetchone()[0]
            == 4
        )


def test_a_pruned_version_a_stored_result_refers_to_is_embedded(tmp_path: Path) -> None:
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    log.add(PutConfig("ns", "k", "first"), key="idem", ttl=10**6, at=1)
    for i in range(5):
        log.add(PutConfig("ns", "k", f"v{i}"), at=2 + i)
    with StateMachine(tmp_path / "s.db") as m:
        first = m.apply(log.entries)[1]
        prune(m, at=100, keep=2, age_s=0)
        assert "first" not in [r[0] for r in m.conn.execute("SELECT value FROM versions")]
        log.add(PutConfig("ns", "k", "first"), key="idem", ttl=10**6, at=200)
        (retry,) = m.apply(log.entries[m.applied_index :])
        assert retry.duplicate_of == 2 and retry.value == first.value
