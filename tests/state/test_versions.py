"""Schema 2: each value stored once, idempotency results referring to versions, history
compaction of versions, incremental vacuum, the SQLite settings of a new database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from confman.node.state.commands import (
    Batch,
    CompactHistory,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
    timestamp_micros,
)
from confman.node.state.machine import StateMachine
from confman.node.state.machine_results import ApplyResult, ApplyStatus, pack_result, unpack_result
from confman.node.state.schema import SCHEMA, TABLE_ORDER, create_schema, micros_timestamp
from confman.raft.types import ConfState
from tests.state.logbuilder import Log, audit_rows, ts, workload
from tests.state.test_machine import run


@pytest.fixture(name="machine")
def fresh_machine(tmp_path: Path) -> Iterator[StateMachine]:
    with StateMachine(tmp_path / "v2.db") as m:
        yield m


def copies(machine: StateMachine, needle: str) -> int:
    """How many cells of the database hold ``needle`` (as text, or inside a blob)."""
    found = 0
    for table in TABLE_ORDER:
        for row in machine.conn.execute(f"SELECT * FROM {table}"):
            for cell in row:
                text = cell.decode(errors="replace") if isinstance(cell, bytes) else cell
                if isinstance(text, str) and needle in text:
                    found += 1
    return found


def test_each_value_is_stored_once(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "first-value-xyz"), key="i1", ttl=60)
    log.add(PutConfig("ns", "k", "second-value-xyz"), key="i2", ttl=60)
    log.add(PutConfig("ns", "k", "third", expected_version=1), key="i3", ttl=60)  # fails
    log.add(DeleteConfig("ns", "k"), key="i4", ttl=60)
    results = run(machine, log)
    assert [r.status for r in results[1:]] == [
        ApplyStatus.CREATED,
        ApplyStatus.UPDATED,
        ApplyStatus.PRECONDITION_FAILED,
        ApplyStatus.DELETED,
    ]
    assert copies(machine, "first-value-xyz") == 1
    assert copies(machine, "second-value-xyz") == 1
    assert copies(machine, "third") == 0  # a failed put stores nothing


def test_idempotency_results_refer_to_versions_and_replay_exactly(
    machine: StateMachine,
) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v1"), key="a", ttl=60)
    log.add(
        Batch((PutConfig("ns", "x", "bx"), PutConfig("ns", "y", "by", "json"))), key="b", ttl=60
    )
    log.add(PutConfig("ns", "k", "v2", expected_version=9), key="c", ttl=60)
    first = run(machine, log)
    blob = machine.conn.execute("SELECT result FROM idempotency WHERE key = 'a'").fetchone()[0]
    raw = msgpack.unpackb(blob)
    assert raw[0] == 2 and isinstance(raw[4], int)  # format 2, a version id
    log.add(PutConfig("ns", "k", "v1"), key="a", ttl=60)
    log.add(
        Batch((PutConfig("ns", "x", "bx"), PutConfig("ns", "y", "by", "json"))), key="b", ttl=60
    )
    log.add(PutConfig("ns", "k", "v2", expected_version=9), key="c", ttl=60)
    again = run(machine, log)
    for before, after in zip(first[1:], again, strict=True):
        assert after.duplicate_of == before.index
        assert (after.status, after.detail, after.value) == (
            before.status,
            before.detail,
            before.value,
        )
        assert [m.value for m in after.members] == [m.value for m in before.members]


def test_retry_after_its_version_was_compacted_still_answers_the_same(
    machine: StateMachine,
) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v1", "json"), key="a", ttl=3600)
    log.add(PutConfig("ns", "k", "v2"))
    log.add(PutConfig("ns", "k", "v3"))
    log.add(CompactHistory(3))  # drops v1 (nothing but the stored result needs it)
    first = run(machine, log)
    assert first[4].status is ApplyStatus.COMPACTED
    values = [r[0] for r in machine.conn.execute("SELECT value FROM versions ORDER BY vid")]
    assert values == ["v2", "v3"]  # v2: the oldValue of the retained event
    raw = msgpack.unpackb(machine.conn.execute("SELECT result FROM idempotency").fetchone()[0])
    assert len(raw) == 5  # rewritten in format 1, the value embedded
    log.add(PutConfig("ns", "k", "v1", "json"), key="a", ttl=3600)
    (retry,) = run(machine, log)
    assert retry.duplicate_of == 2 and retry.value == first[1].value


def test_compaction_keeps_current_and_old_values_of_retained_events(
    machine: StateMachine,
) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "keep", "only"))  # 2: current value, event compacted
    log.add(PutConfig("ns", "gone", "g1"))  # 3
    log.add(DeleteConfig("ns", "gone"))  # 4: the key and its history go entirely
    log.add(PutConfig("ns", "k", "a"))  # 5
    log.add(PutConfig("ns", "k", "b"))  # 6
    log.add(PutConfig("ns", "k", "c"))  # 7 (old value b retained)
    log.add(CompactHistory(6))
    run(machine, log)
    assert [(r[3], r[6], r[7], r[8]) for r in audit_rows(machine)] == [
        ("config.updated", "k", "b", "c")
    ]
    keys = [r[0] for r in machine.conn.execute("SELECT key FROM entries ORDER BY key")]
    assert keys == ["k", "keep"]
    values = [r[0] for r in machine.conn.execute("SELECT value FROM versions ORDER BY vid")]
    assert values == ["only", "b", "c"]


def test_namespace_deletion_renders_every_deleted_entry(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "b", "2"))
    log.add(PutConfig("ns", "a", "1"))
    log.add(PutConfig("ns", "a", "1b"))
    log.add(DeleteNamespace("ns"))
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "a", "new"))
    results = run(machine, log)
    assert results[-1].value is not None and results[-1].value["version"] == 1
    assert [(r[0], r[3], r[6], r[7], r[8], r[9]) for r in audit_rows(machine)][4:] == [
        (5, "config.deleted", "a", "1b", None, 2),
        (5, "config.deleted", "b", "2", None, 1),
        (5, "namespace.deleted", None, None, None, None),
        (6, "namespace.created", None, None, None, None),
        (7, "config.created", "a", None, "new", 1),
    ]


def test_format_1_results_still_decode() -> None:
    v1 = [4, "created", "configuration created", {"key": "k", "value": "v"}, []]
    assert unpack_result(v1) == ApplyResult(
        4, ApplyStatus.CREATED, "configuration created", {"key": "k", "value": "v"}
    )
    v2 = pack_result(ApplyResult(4, ApplyStatus.CREATED, "x", {"value": "v"}, vid=99))
    assert v2 == [2, 4, "created", "x", 99, []]
    assert unpack_result(v2, lambda vid: {"vid": vid}).value == {"vid": 99}
    with pytest.raises(ValueError, match="render needed"):
        unpack_result(v2)


def test_timestamps_round_trip_through_micros() -> None:
    for text in (
        ts(0),
        ts(0.000001),
        ts(86399.999999),
        "0001-01-01T00:00:00.000000Z",
        "1969-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.999999Z",
    ):
        assert micros_timestamp(timestamp_micros(text)) == text


def test_new_database_settings(tmp_path: Path) -> None:
    with StateMachine(tmp_path / "s.db") as m:
        pragmas = {
            name: m.conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_size", "auto_vacuum", "journal_size_limit", "journal_mode")
        }
    assert pragmas == {
        "page_size": 8192,
        "auto_vacuum": 2,
        "journal_size_limit": 16777216,
        "journal_mode": "wal",
    }


def test_vacuum_step_returns_freed_pages_without_changing_state(tmp_path: Path) -> None:
    with StateMachine(tmp_path / "s.db") as m:
        assert m.vacuum_step(100) == 0  # nothing free
        log = Log()
        log.add(PutNamespace("ns"))
        for i in range(300):
            log.add(PutConfig("ns", f"k{i}", "x" * 2000))
        log.add(DeleteNamespace("ns"))
        log.add(CompactHistory(log.next_index - 1))
        run(m, log)
        free = m.conn.execute("PRAGMA freelist_count").fetchone()[0]
        assert free > 10
        digest = m.state_digest()
        pages = m.conn.execute("PRAGMA page_count").fetchone()[0]
        assert m.vacuum_step(5) == 5
        assert m.conn.execute("PRAGMA page_count").fetchone()[0] == pages - 5
        assert m.vacuum_step(10**6) == free - 5
        assert m.vacuum_step(10) == 0
        assert m.state_digest() == digest


def test_a_logical_copy_in_table_order_is_a_valid_state_database(tmp_path: Path) -> None:
    log = workload(seed=5, count=400)
    with StateMachine(tmp_path / "a.db") as m:
        run(m, log)
        dump = {
            t: m.conn.execute(f"SELECT * FROM {t} ORDER BY {o}").fetchall()
            for t, o in TABLE_ORDER.items()
        }
        digest = m.state_digest()
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    create_schema(conn)
    conn.execute("DELETE FROM meta")
    conn.execute("DELETE FROM history")
    for table, rows in dump.items():
        for row in rows:
            conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    conn.close()
    with StateMachine(tmp_path / "b.db") as copy:
        assert copy.state_digest() == digest
        log.add(PutConfig("ns0", "after-copy", "v"))
        log.conf(ConfState(("a",)))
        assert len(copy.apply(log.entries[copy.applied_index :], log.conf_states)) == 2


def test_every_table_of_the_schema_is_in_table_order() -> None:
    created = {line.split()[5] for line in SCHEMA.splitlines() if line.startswith("CREATE TABLE")}
    assert created == set(TABLE_ORDER)


def test_a_1_kb_put_costs_about_its_value_bytes(tmp_path: Path) -> None:
    """The point of schema 2: 5,000 puts of 1 KB over 1,000 keys (slices of 64, as the
    node applies) take < 1.3x their value bytes (format 1: 2.6x; 50,000 puts: 1.23x)."""
    log = Log()
    log.add(PutNamespace("ns"))
    for i in range(5000):
        log.add(PutConfig("ns", f"key-{i % 1000:04d}", f"{i:08d}" + "x" * 1016))
    db = tmp_path / "size.db"
    with StateMachine(db) as m:
        for lo in range(0, len(log.entries), 64):
            m.apply(log.entries[lo : lo + 64])
        m.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = db.stat().st_size
    assert size < 1.3 * 5000 * 1024, size / (5000 * 1024)
