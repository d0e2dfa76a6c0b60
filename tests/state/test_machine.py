"""Apply: every command and result, versions, audit, batches, CAS, idempotency, ordering."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from confman.node.state.commands import (
    Batch,
    CompactHistory,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
)
from confman.node.state.machine import ApplyOrderError, ApplyResult, ApplyStatus, StateMachine
from confman.raft.types import ConfState, Entry, EntryType
from tests.state.logbuilder import Log, audit_rows, entry_rows, statuses, ts


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[StateMachine]:
    with StateMachine(tmp_path / "state.db") as m:
        yield m


def run(machine: StateMachine, log: Log) -> list[ApplyResult]:
    """Apply what ``log`` has beyond the machine's applied index, in one batch."""
    return machine.apply(log.entries[machine.applied_index :], log.conf_states)


def actions(machine: StateMachine) -> list[tuple[object, ...]]:
    """idx, seq, action, namespace, key, old value, new value, version of every event."""
    return [(r[0], r[1], *r[3:4], *r[5:]) for r in audit_rows(machine)]


# -- namespaces ----------------------------------------------------------------------------


def test_put_namespace_creates_then_updates_keeping_created_at(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("team", "first", "ops"), at=1)
    log.add(PutNamespace("team", "second", None), actor="bob", at=2)
    created, updated = run(machine, log)
    assert created.status is ApplyStatus.CREATED
    assert created.value == {
        "path": "team",
        "description": "first",
        "owner": "ops",
        "createdAt": ts(1),
    }
    assert updated.status is ApplyStatus.UPDATED
    assert updated.value == {
        "path": "team",
        "description": "second",
        "owner": None,
        "createdAt": ts(1),
    }
    assert machine.conn.execute("SELECT * FROM namespaces").fetchall() == [
        ("team", "second", None, ts(1), ts(2))
    ]
    assert [(a[2], a[3]) for a in actions(machine)] == [
        ("namespace.created", "team"),
        ("namespace.updated", "team"),
    ]
    actors = [r[4] for r in audit_rows(machine)]
    assert actors == ["alice", "bob"]


def test_delete_namespace_cascades_with_audit_per_entry(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("team"))
    log.add(PutNamespace("other"))
    log.add(PutConfig("team", "b", "2"))
    log.add(PutConfig("team", "a", "1"))
    log.add(PutConfig("team", "a", "1b"))
    log.add(PutConfig("other", "a", "keep"))
    log.add(DeleteNamespace("team"))
    log.add(DeleteNamespace("team"))
    results = run(machine, log)
    assert statuses(results[-2:]) == ["deleted", "not_found"]
    assert results[-2].value is not None and results[-2].value["path"] == "team"
    assert results[-1].detail == "Namespace not found"
    # config.deleted for each entry (sorted by key, with its last value and version), then
    # namespace.deleted, all under the delete's index.
    assert [a for a in actions(machine) if a[0] == 7] == [
        (7, 0, "config.deleted", "team", "a", "1b", None, 2),
        (7, 1, "config.deleted", "team", "b", "2", None, 1),
        (7, 2, "namespace.deleted", "team", None, None, None, None),
    ]
    assert [r[:3] for r in entry_rows(machine)] == [("other", "a", "keep")]
    # a re-created namespace is empty and its keys start again at version 1
    log.add(PutNamespace("team"))
    log.add(PutConfig("team", "a", "new"))
    assert run(machine, log)[-1].value["version"] == 1  # type: ignore[index]


# -- config entries ------------------------------------------------------------------------


def test_put_config_versions_grow_by_one_and_restart_after_delete(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    for value in ("v1", "v2", "v3"):
        log.add(PutConfig("ns", "k", value, "string"), actor="carol")
    log.add(DeleteConfig("ns", "k"))
    log.add(PutConfig("ns", "k", "again", "json"))
    results = run(machine, log)
    assert statuses(results) == ["created", "created", "updated", "updated", "deleted", "created"]
    assert [r.value["version"] for r in results[1:4]] == [1, 2, 3]  # type: ignore[index]
    assert results[3].value == {
        "namespace": "ns",
        "key": "k",
        "value": "v3",
        "type": "string",
        "version": 3,
        "updatedAt": ts(0.004),
        "updatedBy": "carol",
    }
    assert results[4].value is not None and results[4].value["value"] == "v3"
    assert results[5].value is not None and results[5].value["version"] == 1
    assert [a[2:] for a in actions(machine)[1:]] == [
        ("config.created", "ns", "k", None, "v1", 1),
        ("config.updated", "ns", "k", "v1", "v2", 2),
        ("config.updated", "ns", "k", "v2", "v3", 3),
        ("config.deleted", "ns", "k", "v3", None, 3),
        ("config.created", "ns", "k", None, "again", 1),
    ]
    row = entry_rows(machine)[0]
    # namespace, key, value, type, version, updated_at, updated_by, created_index, mod_index
    assert row == ("ns", "k", "again", "json", 1, ts(0.006), "alice", 6, 6)


def test_mod_index_moves_created_index_stays(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "1"))
    log.add(PutConfig("ns", "other", "x"))
    log.add(PutConfig("ns", "k", "2"))
    run(machine, log)
    assert [r[7:] for r in entry_rows(machine)] == [(2, 4), (3, 3)]


def test_config_in_missing_namespace_is_not_found(machine: StateMachine) -> None:
    log = Log()
    log.add(PutConfig("nope", "k", "v"))
    log.add(DeleteConfig("nope", "k"))
    log.add(PutNamespace("ns"))
    log.add(DeleteConfig("ns", "k"))
    results = run(machine, log)
    assert [(r.status, r.detail) for r in results] == [
        (ApplyStatus.NOT_FOUND, "Namespace not found"),
        (ApplyStatus.NOT_FOUND, "Namespace not found"),
        (ApplyStatus.CREATED, "namespace created"),
        (ApplyStatus.NOT_FOUND, "Configuration not found"),
    ]
    assert not results[0].ok and results[2].ok
    assert entry_rows(machine) == []
    assert len(audit_rows(machine)) == 1


# -- conditional writes --------------------------------------------------------------------


def test_if_match_compare_and_set(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v1", expected_version=1))  # absent: fails
    log.add(PutConfig("ns", "k", "v1"))
    log.add(PutConfig("ns", "k", "v2", expected_version=1))  # matches
    log.add(PutConfig("ns", "k", "lost", expected_version=1))  # stale
    log.add(DeleteConfig("ns", "k", expected_version=1))  # stale
    log.add(DeleteConfig("ns", "k", expected_version=2))  # matches
    log.add(DeleteConfig("ns", "k", expected_version=2))  # absent now
    results = run(machine, log)
    assert statuses(results) == [
        "created",
        "precondition_failed",
        "created",
        "updated",
        "precondition_failed",
        "precondition_failed",
        "deleted",
        "precondition_failed",
    ]
    assert results[1].detail == "Version mismatch: expected 1, configuration does not exist"
    assert results[4].detail == "Version mismatch: expected 1, current 2"
    # a failed precondition shows the current entry (for the 412's ETag) and changes nothing
    assert results[4].value is not None and results[4].value["version"] == 2
    assert results[4].value["value"] == "v2"
    assert [a[2] for a in actions(machine)] == [
        "namespace.created",
        "config.created",
        "config.updated",
        "config.deleted",
    ]


def test_if_none_match_creates_only(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "first", create_only=True))
    log.add(PutConfig("ns", "k", "second", create_only=True))
    results = run(machine, log)
    assert statuses(results) == ["created", "created", "precondition_failed"]
    assert results[2].detail == "Configuration already exists"
    assert results[2].value is not None and results[2].value["value"] == "first"
    assert entry_rows(machine)[0][2:5] == ("first", "string", 1)


# -- batches -------------------------------------------------------------------------------


def test_batch_applies_all_members_under_one_index(machine: StateMachine) -> None:
    log = Log()
    log.add(Batch((PutNamespace("ns"), PutConfig("ns", "a", "1"), PutConfig("ns", "b", "2"))))
    (result,) = run(machine, log)
    assert result.status is ApplyStatus.APPLIED and result.ok
    assert statuses(result.members) == ["created", "created", "created"]
    assert [(a[0], a[1], a[2]) for a in actions(machine)] == [
        (1, 0, "namespace.created"),
        (1, 1, "config.created"),
        (1, 2, "config.created"),
    ]


def test_batch_is_all_or_nothing(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "a", "1"))
    run(machine, log)
    before_digest = machine.state_digest()
    before = (entry_rows(machine), audit_rows(machine))
    log.add(
        Batch(
            (
                PutConfig("ns", "a", "2"),
                PutNamespace("new"),
                DeleteConfig("ns", "missing"),
                PutConfig("ns", "c", "never evaluated"),
            )
        )
    )
    log.add(Batch((PutConfig("ns", "a", "3", expected_version=9),)))
    failed, cas_failed = run(machine, log)
    assert failed.status is ApplyStatus.NOT_FOUND and not failed.ok
    assert failed.detail == (
        "Batch command 3 of 4 failed, nothing applied: Configuration not found"
    )
    assert statuses(failed.members) == ["updated", "created", "not_found"]
    assert cas_failed.status is ApplyStatus.PRECONDITION_FAILED
    assert (entry_rows(machine), audit_rows(machine)) == before
    assert machine.conn.execute("SELECT path FROM namespaces").fetchall() == [("ns",)]
    assert machine.state_digest() != before_digest  # the applied index moved on
    # the rolled-back namespace must not linger in any cache: a put into it fails
    log.add(PutConfig("new", "k", "v"))
    log.add(Batch(()))
    late, empty = run(machine, log)
    assert late.status is ApplyStatus.NOT_FOUND
    assert empty.status is ApplyStatus.NOOP


def test_later_entries_of_an_apply_see_earlier_ones(machine: StateMachine) -> None:
    log = Log()
    log.add(Batch((PutNamespace("ns"), PutConfig("ns", "a", "1"))))
    log.add(Batch((PutConfig("ns", "a", "2"), DeleteNamespace("ns"), PutConfig("ns", "x", "y"))))
    log.add(PutConfig("ns", "a", "3"))
    results = run(machine, log)
    assert statuses(results) == ["applied", "not_found", "updated"]
    assert results[2].value is not None and results[2].value["version"] == 2


# -- idempotency ---------------------------------------------------------------------------


def test_retry_with_idempotency_key_returns_the_original_result(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    first = log.add(PutConfig("ns", "k", "v"), key="req-1", at=10)
    log.add(PutConfig("ns", "k", "other"), actor="bob")
    log.add(PutConfig("ns", "k", "v"), key="req-1", at=11)  # the client's retry
    results = run(machine, log)
    original, retry = results[1], results[3]
    assert retry.duplicate_of == first.index and original.duplicate_of is None
    assert retry.index == 4
    assert (retry.status, retry.detail, retry.value) == (
        original.status,
        original.detail,
        original.value,
    )
    assert retry.value is not None and retry.value["version"] == 1
    assert [a[2] for a in actions(machine)] == [
        "namespace.created",
        "config.created",
        "config.updated",
    ]
    assert entry_rows(machine)[0][2] == "other"  # the retry did not overwrite bob's write


def test_failed_results_are_remembered_too(machine: StateMachine) -> None:
    log = Log()
    log.add(PutConfig("ns", "k", "v"), key="req")
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v"), key="req")
    results = run(machine, log)
    assert statuses(results) == ["not_found", "created", "not_found"]
    assert results[2].duplicate_of == 1 and entry_rows(machine) == []


def test_idempotency_key_reused_for_another_request_is_refused(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"), key="req")
    log.add(PutNamespace("other"), key="req")
    log.add(PutNamespace("ns"), key="req", actor="mallory")
    results = run(machine, log)
    assert statuses(results) == ["created", "key_reused", "key_reused"]
    assert not results[1].ok
    assert results[1].detail == "Idempotency key was used for a different request"
    assert machine.conn.execute("SELECT path FROM namespaces").fetchall() == [("ns",)]


def test_idempotency_keys_expire_by_request_time_and_are_purged(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"), at=0)
    log.add(PutConfig("ns", "k", "v"), key="a", ttl=60, at=100)
    log.add(PutConfig("ns", "k", "v"), key="b", ttl=600, at=100)
    log.add(PutConfig("ns", "k", "v"), key="a", ttl=60, at=159.999999)  # still known
    assert [r.duplicate_of for r in run(machine, log)] == [None, None, None, 2]
    keys = machine.conn.execute("SELECT key FROM idempotency ORDER BY key").fetchall()
    assert keys == [("a",), ("b",)]
    log.add(PutConfig("ns", "other", "x"), at=160)  # no key; still purges "a"
    run(machine, log)
    keys = machine.conn.execute("SELECT key FROM idempotency ORDER BY key").fetchall()
    assert keys == [("b",)]
    log.add(PutConfig("ns", "k", "v"), key="a", ttl=60, at=161)  # applied again
    log.add(PutConfig("ns", "k", "v"), key="b", ttl=600, at=161)  # still a retry
    fresh, retry = run(machine, log)
    assert fresh.duplicate_of is None and fresh.status is ApplyStatus.UPDATED
    assert fresh.value is not None and fresh.value["version"] == 3
    assert retry.duplicate_of == 3


def test_idempotency_ttl_zero_remembers_nothing(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v"), key="a", ttl=0)
    log.add(PutConfig("ns", "k", "v"), key="a", ttl=0)
    assert statuses(run(machine, log)) == ["created", "created", "updated"]


def test_retry_of_a_batch_returns_member_results(machine: StateMachine) -> None:
    log = Log()
    batch = Batch((PutNamespace("ns"), PutConfig("ns", "k", "v")))
    log.add(batch, key="b")
    log.add(batch, key="b")
    first, retry = run(machine, log)
    assert retry.members == first.members and retry.duplicate_of == 1


# -- ordering, no-ops, membership, rejection -----------------------------------------------


def test_replaying_an_applied_entry_is_impossible(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v"))
    run(machine, log)
    digest = machine.state_digest()
    for entries in ([log.entries[1]], log.entries, [log.entries[0]]):
        with pytest.raises(ApplyOrderError, match="expected 3"):
            machine.apply(entries)
    assert machine.state_digest() == digest and machine.applied_index == 2


def test_gaps_and_non_contiguous_batches_are_refused(machine: StateMachine) -> None:
    log = Log()
    for i in range(4):
        log.add(PutNamespace(f"n{i}"))
    with pytest.raises(ApplyOrderError, match="index 2, expected 1"):
        machine.apply(log.entries[1:])
    with pytest.raises(ApplyOrderError, match="index 3, expected 2"):
        machine.apply([log.entries[0], log.entries[2]])
    assert machine.applied_index == 0
    assert machine.conn.execute("SELECT count(*) FROM namespaces").fetchone() == (0,)
    assert machine.apply([]) == []


def test_noop_and_applied_term(machine: StateMachine) -> None:
    log = Log(term=3)
    log.noop()
    log.term = 4
    log.add(PutNamespace("ns"))
    log.noop()
    results = run(machine, log)
    assert statuses(results) == ["noop", "created", "noop"]
    assert results[0].detail == "leader no-op"
    assert (machine.applied_index, machine.applied_term) == (3, 4)
    assert machine.conn.execute("SELECT applied_index, applied_term FROM meta").fetchone() == (
        3,
        4,
    )


def test_conf_change_stores_membership(machine: StateMachine, tmp_path: Path) -> None:
    log = Log()
    log.conf(ConfState(("a", "b", "c")))
    log.add(PutNamespace("ns"))
    log.conf(ConfState(("a", "b"), ("d",)))
    results = run(machine, log)
    assert results[2].status is ApplyStatus.NOOP
    assert results[2].value == {"voters": ["a", "b"], "learners": ["d"]}
    assert machine.conf_state() == ConfState(("a", "b"), ("d",))
    machine.close()
    with StateMachine(tmp_path / "state.db") as reopened:
        assert reopened.conf_state() == ConfState(("a", "b"), ("d",))


def test_failure_inside_apply_rolls_back_the_whole_batch(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v"), key="idem", ttl=60)
    log.conf(ConfState(("a",)))
    del log.conf_states[3]  # the runtime forgot the ConfState: a bug, not a result
    with pytest.raises(ValueError, match="without its ConfState"):
        run(machine, log)
    assert machine.applied_index == 0
    for table in ("namespaces", "entries", "versions", "events", "actors", "idempotency"):
        assert machine.conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    log.conf_states[3] = ConfState(("a",))
    assert statuses(run(machine, log)) == ["created", "created", "noop"]


def test_undecodable_entry_is_rejected_recorded_and_logged(
    machine: StateMachine, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.raw(b"\xc1garbage")
    log.raw(b"\x97\x02\xa1r\xa1a\xa0\xc0\x00\x92\x02\xa1x")  # format version 2
    log.add(PutConfig("ns", "k", "v"))
    with caplog.at_level(logging.ERROR, logger="confman.node.state.machine"):
        results = run(machine, log)
    assert statuses(results) == ["created", "rejected", "rejected", "created"]
    assert results[1].detail.startswith("undecodable command: not msgpack")
    assert "unknown command format version 2" in results[2].detail
    assert machine.conn.execute("SELECT idx FROM rejected").fetchall() == [(2,), (3,)]
    messages = [r.getMessage()[:21] for r in caplog.records]
    assert messages == ["rejected log entry 2:", "rejected log entry 3:"]
    assert machine.applied_index == 4


def test_unknown_entry_type_is_rejected(machine: StateMachine) -> None:
    odd = Entry(1, 1, 7, b"x")  # type: ignore[arg-type]
    (result,) = machine.apply([odd])
    assert result.status is ApplyStatus.REJECTED and "unknown entry type" in result.detail
    assert machine.applied_index == 1
    assert machine.apply([Entry(1, 2, EntryType.NORMAL, b"")])[0].status is ApplyStatus.NOOP


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    log = Log(term=2)
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v"), key="x")
    with StateMachine(tmp_path / "s.db") as m:
        run(m, log)
        digest = m.state_digest()
    with StateMachine(tmp_path / "s.db") as m:
        assert (m.applied_index, m.applied_term, m.state_digest()) == (2, 2, digest)


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    with StateMachine(tmp_path / "s.db") as m:
        m.conn.execute("UPDATE meta SET schema_version = 99")
    with pytest.raises(RuntimeError, match="unknown state schema version 99"):
        StateMachine(tmp_path / "s.db")


def test_digest_sees_every_table(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    run(machine, log)
    digest = machine.state_digest()
    for table, change in [
        ("namespaces", "UPDATE namespaces SET owner = 'x'"),
        ("events", "UPDATE events SET actor_id = 7"),
        ("actors", "UPDATE actors SET name = 'x'"),
        ("paths", "UPDATE paths SET path = 'x'"),
        ("versions", "INSERT INTO versions VALUES (9, 1, 1, 'v', 'string', 0, 1)"),
        ("meta", "UPDATE meta SET voters = '[\"x\"]'"),
        ("entries", "INSERT INTO entries VALUES (1, 1, 'k', NULL)"),
        ("idempotency", "INSERT INTO idempotency VALUES ('k', x'00', x'00', 5)"),
        ("rejected", "INSERT INTO rejected VALUES (9, 'x')"),
    ]:
        machine.conn.execute("SAVEPOINT probe")
        machine.conn.execute(change)
        assert machine.state_digest() != digest, table
        machine.conn.execute("ROLLBACK TO probe")
        machine.conn.execute("RELEASE probe")
    assert machine.state_digest() == digest


# -- If-Match: * and history compaction ----------------------------------------------------


def test_must_exist_is_if_match_any_version(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v", must_exist=True))
    log.add(DeleteConfig("ns", "k", must_exist=True))
    log.add(PutConfig("ns", "k", "1"))
    log.add(PutConfig("ns", "k", "2", must_exist=True))
    log.add(DeleteConfig("ns", "k", must_exist=True))
    results = run(machine, log)
    assert statuses(results) == [
        "created",
        "precondition_failed",
        "precondition_failed",
        "created",
        "updated",
        "deleted",
    ]
    assert results[1].detail == "Configuration does not exist (If-Match: *)"
    assert results[4].value is not None and results[4].value["version"] == 2


def test_compact_history_deletes_audit_rows_up_to_through(machine: StateMachine) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    for i in range(4):
        log.add(PutConfig("ns", "k", str(i)))  # indexes 2..5
    log.add(CompactHistory(3))
    log.add(CompactHistory(2))  # behind the floor: nothing to do
    log.add(CompactHistory(99))  # capped below its own index (8)
    log.add(PutConfig("ns", "k", "after"))
    results = run(machine, log)
    assert statuses(results)[5:] == ["compacted", "noop", "compacted", "updated"]
    assert results[5].value == {"compactedThrough": 3}
    assert results[7].value == {"compactedThrough": 7}
    assert [row[0] for row in actions(machine)] == [9]
    assert machine.conn.execute("SELECT compacted_through FROM history").fetchone() == (7,)


def test_compaction_inside_one_batch_drops_that_batchs_earlier_rows(tmp_path: Path) -> None:
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "a", "1"))
    log.add(CompactHistory(2))
    log.add(PutConfig("ns", "b", "1"))
    with StateMachine(tmp_path / "one.db") as one, StateMachine(tmp_path / "single.db") as single:
        run(one, log)
        for entry in log.entries:
            single.apply([entry])
        assert [row[0] for row in actions(one)] == [4]
        assert one.state_digest() == single.state_digest()
