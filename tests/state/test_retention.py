"""Pruning history by policy (``retention``): the newest N versions of every key and
everything younger than the age limit stay; watches from the floor on miss nothing."""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from confman.api.compaction import PrunePacing, prune_due
from confman.node.state.commands import (
    CompactHistory,
    DeleteConfig,
    PutConfig,
    PutNamespace,
    timestamp_micros,
)
from confman.node.state.machine import StateMachine
from confman.node.state.machine_results import ApplyResult, ApplyStatus
from confman.node.state.queries import ChangeFilter, HistoryCompacted, Reader
from tests.state.logbuilder import T0, Log, audit_rows, ts, workload


def prune(
    machine: StateMachine, log: Log, at: float, keep: int, age_s: int, budget: int = 10_000
) -> ApplyResult:
    """Set the retention policy (as a future command would) and apply a ``CompactHistory(0)``
    entry at ``at`` seconds after T0: pruning by policy alone."""
    machine.conn.execute(
        "UPDATE history SET keep_versions = ?, keep_age_s = ?, prune_budget = ?",
        (keep, age_s, budget),
    )
    log.add(CompactHistory(0), actor="confman", at=at)
    (result,) = machine.apply(log.entries[machine.applied_index :], log.conf_states)
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
        result = prune(pruned, log, at=150, keep=3, age_s=60)
        assert result.status is ApplyStatus.COMPACTED
        ref.apply(log.entries[ref.applied_index :])  # its policy is the default: a no-op
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
        # the same log on another node with the same policy gives the same state
        with StateMachine(tmp_path / "q.db") as other:
            other.conn.execute(
                "UPDATE history SET keep_versions = 3, keep_age_s = 60, prune_budget = 10000"
            )
            other.apply(log.entries, log.conf_states)
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
        assert prune(m, log, at=10, keep=100, age_s=0).status is ApplyStatus.NOOP  # by count
        assert prune(m, log, at=10, keep=2, age_s=5).status is ApplyStatus.COMPACTED  # age
        hot = [r[8] for r in audit_rows(m) if r[6] == "hot"]
        assert hot == ["v5", "v6", "v7", "v8", "v9"]
        assert prune(m, log, at=100, keep=2, age_s=5).status is ApplyStatus.COMPACTED
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
        prune(m, log, at=70, keep=100, age_s=30)
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
        while True:
            result = prune(m, log, at=1000, keep=1, age_s=0, budget=5)
            if result.status is ApplyStatus.NOOP:
                break
            rounds += 1
            assert result.value is not None and result.value["pruned"] <= 5 + 1
            more = result.value["more"]
            assert rounds < 40
        assert rounds > 6 and not more
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
        prune(m, log, at=100, keep=2, age_s=0)
        assert "first" not in [r[0] for r in m.conn.execute("SELECT value FROM versions")]
        log.add(PutConfig("ns", "k", "first"), key="idem", ttl=10**6, at=200)
        (retry,) = m.apply(log.entries[m.applied_index :])
        assert retry.duplicate_of == 2 and retry.value == first.value


def test_the_default_policy_keeps_100_versions_and_7_days(tmp_path: Path) -> None:
    day = 24 * 3600
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    for i in range(150):
        log.add(PutConfig("ns", "hot", f"v{i}"), at=i)  # the first day
    log.add(PutConfig("ns", "cold", "c"), at=10)
    log.add(DeleteConfig("ns", "cold"), at=11)
    for i in range(150):
        log.add(PutConfig("ns", "new", f"n{i}"), at=6 * day + i)  # 6 days later
    log.add(CompactHistory(0), actor="confman", at=6 * day + 200)
    log.add(CompactHistory(0), actor="confman", at=8 * day)
    with StateMachine(tmp_path / "s.db") as m:
        results = m.apply(log.entries)
        assert results[-2].status is ApplyStatus.NOOP  # nothing is 7 days old yet
        assert results[-1].status is ApplyStatus.COMPACTED
        events = audit_rows(m)
        assert [r[8] for r in events if r[6] == "hot"] == [f"v{i}" for i in range(50, 150)]
        assert [r[8] for r in events if r[6] == "new"] == [f"n{i}" for i in range(150)]
        assert "cold" not in [r[6] for r in events]  # deleted 8 days ago: all of it went
        floor = m.conn.execute("SELECT compacted_through FROM history").fetchone()[0]
        assert floor == 153  # the delete of "cold" (index 153), the newest pruned event


def test_the_leader_prunes_once_the_oldest_change_is_older_than_the_age_limit(
    tmp_path: Path,
) -> None:
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    with StateMachine(tmp_path / "s.db") as m:
        with Reader(tmp_path / "s.db") as reader:
            assert not prune_due(reader, T0 + timedelta(days=30))  # no history at all
            m.apply(log.entries)
            assert reader.retention_policy() == (100, 7 * 24 * 3600)
            assert not prune_due(reader, T0 + timedelta(days=7))
            assert prune_due(reader, T0 + timedelta(days=7, microseconds=1))
        pacing = PrunePacing()
        assert pacing.ready()
        pacing.done(found_nothing=False)
        assert pacing.ready()
        pacing.done(found_nothing=True)
        assert not pacing.ready()


def test_a_migrated_database_gets_the_default_policy(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "format1.db", db)
    StateMachine(db).close()
    with Reader(db) as reader:
        assert reader.retention_policy() == (100, 7 * 24 * 3600)
        assert reader.history_floor() == 9
