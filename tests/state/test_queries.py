"""Readers: API shapes, sorting, namespace grants, audit clamping, changes for watches."""

from __future__ import annotations

import threading
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
from confman.node.state.machine import StateMachine
from confman.node.state.queries import ChangeFilter, HistoryCompacted, Reader
from tests.state.logbuilder import Log, ts


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[StateMachine, Reader, Log]]:
    path = tmp_path / "state.db"
    machine = StateMachine(path)
    reader = Reader(path)
    yield machine, reader, Log()
    reader.close()
    machine.close()


def apply(machine: StateMachine, log: Log) -> None:
    machine.apply(log.entries[machine.applied_index :], log.conf_states)


def test_namespaces_in_api_shape_sorted(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    log.add(PutNamespace("zeta", "last", "ops"), at=1)
    log.add(PutNamespace("alpha"), at=2)
    apply(machine, log)
    assert reader.get_namespace("zeta") == {
        "path": "zeta",
        "description": "last",
        "owner": "ops",
        "createdAt": ts(1),
    }
    assert reader.get_namespace("missing") is None
    assert [n["path"] for n in reader.list_namespaces()] == ["alpha", "zeta"]
    assert reader.list_namespaces()[0] == {
        "path": "alpha",
        "description": None,
        "owner": None,
        "createdAt": ts(2),
    }


def test_entries_in_api_shape_sorted_by_key(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    log.add(PutNamespace("ns"))
    log.add(PutNamespace("other"))
    log.add(PutConfig("ns", "b", "2", "number"), actor="bob", at=5)
    log.add(PutConfig("ns", "a", "1"))
    log.add(PutConfig("ns", "a", "1b"))
    log.add(PutConfig("other", "a", "x"))
    apply(machine, log)
    assert reader.get_entry("ns", "b") == {
        "namespace": "ns",
        "key": "b",
        "value": "2",
        "type": "number",
        "version": 1,
        "updatedAt": ts(5),
        "updatedBy": "bob",
    }
    assert reader.get_entry("ns", "zzz") is None
    assert reader.get_entry("nope", "a") is None
    listed = reader.list_entries("ns")
    assert [(e["key"], e["version"]) for e in listed] == [("a", 2), ("b", 1)]
    assert reader.list_entries("nope") == []


def test_list_all_entries_respects_grants(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    names = ["team", "team/app", "team/app/deep", "team-x", "team_y", "teamz", "other", "te"]
    for name in names:
        log.add(PutNamespace(name))
        log.add(PutConfig(name, "k", name))
    apply(machine, log)

    def visible(grants: list[str]) -> list[str]:
        return [e["namespace"] for e in reader.list_all_entries(grants)]

    assert visible(["*"]) == sorted(names)
    assert visible(["team"]) == ["team", "team/app", "team/app/deep"]
    assert visible(["team/app"]) == ["team/app", "team/app/deep"]
    assert visible(["team_y", "other"]) == ["other", "team_y"]  # "_" is no wildcard
    assert visible(["t"]) == []
    assert visible([]) == []
    assert visible(["other", "*"]) == sorted(names)
    namespaces = [n["path"] for n in reader.list_namespaces(["team", "te"])]
    assert namespaces == ["te", "team", "team/app", "team/app/deep"]
    assert reader.list_all_entries() == reader.list_all_entries(["*"])


def test_audit_newest_first_with_clamped_limit(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    log.add(PutNamespace("ns"), at=1)
    for i in range(5):
        log.add(PutConfig("ns", "k", f"v{i}"), actor=f"user{i}", at=2 + i)
    log.add(PutNamespace("other"))
    log.add(DeleteConfig("ns", "k"), at=10)
    apply(machine, log)
    events = reader.audit("ns", limit=50)
    assert len(events) == 7
    assert events[0] == {
        "timestamp": ts(10),
        "action": "config.deleted",
        "actor": "alice",
        "namespace": "ns",
        "key": "k",
        "oldValue": "v4",
        "newValue": None,
    }
    assert events[1]["oldValue"] == "v3" and events[1]["newValue"] == "v4"
    assert events[-1]["action"] == "namespace.created"
    assert [e["action"] for e in reader.audit("ns", limit=2)] == [
        "config.deleted",
        "config.updated",
    ]
    assert len(reader.audit("ns", limit=0)) == 1
    assert len(reader.audit("ns", limit=-5)) == 1
    assert len(reader.audit("ns", limit=10**9)) == 7
    assert reader.audit("missing") == []


def test_audit_limit_upper_bound_is_1000(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    log.add(PutNamespace("ns"))
    log.add(Batch(tuple(PutConfig("ns", f"k{i:04d}", "v") for i in range(1100))))
    apply(machine, log)
    assert len(reader.audit("ns", limit=5000)) == 1000
    # newest first inside one index too: the batch's last member comes first
    assert reader.audit("ns", limit=1)[0]["key"] == "k1099"


def test_changes_since_for_watches(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "a", "1"))
    log.add(PutConfig("ns", "a", "2"))
    log.noop()
    log.add(PutConfig("ns", "b", "x"))
    log.add(DeleteNamespace("ns"))
    apply(machine, log)
    assert reader.changes_since(2) == [
        {
            "index": 3,
            "type": "config.updated",
            "namespace": "ns",
            "key": "a",
            "value": "2",
            "version": 2,
        },
        {
            "index": 5,
            "type": "config.created",
            "namespace": "ns",
            "key": "b",
            "value": "x",
            "version": 1,
        },
        {
            "index": 6,
            "type": "config.deleted",
            "namespace": "ns",
            "key": "a",
            "value": None,
            "version": 2,
        },
        {
            "index": 6,
            "type": "config.deleted",
            "namespace": "ns",
            "key": "b",
            "value": None,
            "version": 1,
        },
        {
            "index": 6,
            "type": "namespace.deleted",
            "namespace": "ns",
            "key": None,
            "value": None,
            "version": None,
        },
    ]
    assert reader.changes_since(6) == []
    assert len(reader.changes_since(0)) == 7


def test_changes_never_split_one_index(db: tuple[StateMachine, Reader, Log]) -> None:
    machine, reader, log = db
    log.add(PutNamespace("ns"))
    log.add(Batch(tuple(PutConfig("ns", f"k{i}", "v") for i in range(5))))
    log.add(PutConfig("ns", "z", "v"))
    apply(machine, log)
    page = reader.changes_since(0, limit=3)
    assert [c["index"] for c in page] == [1, 2, 2, 2, 2, 2]
    assert [c["index"] for c in reader.changes_since(page[-1]["index"], limit=3)] == [3]


def test_reader_sees_applied_index_and_commits_only(
    db: tuple[StateMachine, Reader, Log],
) -> None:
    machine, reader, log = db
    assert reader.applied_index() == 0
    log.add(PutNamespace("ns"))
    apply(machine, log)
    assert reader.applied_index() == 1
    with reader.consistent():
        first = reader.applied_index()
        log.add(PutNamespace("later"))
        apply(machine, log)  # the writer is not blocked by the open read transaction
        assert reader.get_namespace("later") is None
        assert reader.applied_index() == first
        with reader.consistent():  # nesting keeps the outer snapshot
            assert reader.changes_since(1) == []
    assert reader.get_namespace("later") is not None
    assert reader.applied_index() == 2


def test_reader_is_read_only(db: tuple[StateMachine, Reader, Log]) -> None:
    _, reader, _ = db
    with pytest.raises(Exception, match="readonly"):
        reader._conn.execute("DELETE FROM namespaces")


def test_readers_on_other_threads_beside_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    machine = StateMachine(path)
    log = Log()
    log.add(PutNamespace("ns"))
    for i in range(300):
        log.add(PutConfig("ns", "k", str(i)))
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            with Reader(path) as reader:
                while not done.is_set():
                    with reader.consistent():
                        index = reader.applied_index()
                        entry = reader.get_entry("ns", "k")
                    # consistent: the entry's version always matches the applied index
                    expected = max(0, index - 1)
                    got = 0 if entry is None else entry["version"]
                    assert got == expected, (index, entry)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for lo in range(0, len(log.entries), 10):
            machine.apply(log.entries[lo : lo + 10])
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
        machine.close()
    assert not errors, errors[0]


def test_watch_filters_by_namespace_key_prefix_and_grants(
    db: tuple[StateMachine, Reader, Log],
) -> None:
    machine, reader, log = db
    log.add(PutNamespace("team"))  # 1
    log.add(PutNamespace("team/app"))  # 2
    log.add(PutNamespace("other"))  # 3
    log.add(PutConfig("team", "db.url", "a"))  # 4
    log.add(PutConfig("team", "db.pool", "5"))  # 5
    log.add(PutConfig("team", "cache", "on"))  # 6
    log.add(PutConfig("team/app", "db.url", "b"))  # 7
    log.add(PutConfig("other", "db.url", "c"))  # 8
    apply(machine, log)

    def indexes(flt: ChangeFilter, since: int = 0) -> list[int]:
        return [c["index"] for c in reader.watch(since, flt).changes]

    assert indexes(ChangeFilter("team")) == [1, 4, 5, 6]
    assert indexes(ChangeFilter("team", key="db.url")) == [4]
    assert indexes(ChangeFilter("team", prefix="db.")) == [4, 5]
    assert indexes(ChangeFilter(grants=("team",))) == [1, 2, 4, 5, 6, 7]
    assert indexes(ChangeFilter(grants=("other", "nothing"))) == [3, 8]
    assert indexes(ChangeFilter(), since=6) == [7, 8]
    page = reader.watch(8, ChangeFilter("team"))
    assert page.changes == [] and page.through == 8
    assert reader.watch(2, ChangeFilter("other")).through == 8  # applied index, not last match


def test_watch_page_resumes_after_a_full_page_and_refuses_compacted_history(
    db: tuple[StateMachine, Reader, Log],
) -> None:
    machine, reader, log = db
    log.add(PutNamespace("ns"))
    for i in range(6):
        log.add(PutConfig("ns", "k", str(i)))  # 2..7
    apply(machine, log)
    page = reader.watch(0, ChangeFilter("ns"), limit=3)
    assert [c["index"] for c in page.changes] == [1, 2, 3] and page.through == 3
    assert page.changes[1] == {
        "type": "config.created",
        "namespace": "ns",
        "key": "k",
        "value": "0",
        "version": 1,
        "index": 2,
    }
    log.add(CompactHistory(4))
    apply(machine, log)
    assert reader.history_floor() == 4
    with pytest.raises(HistoryCompacted) as caught:
        reader.watch(3, ChangeFilter("ns"))
    assert (caught.value.since, caught.value.floor) == (3, 4)
    page = reader.watch(4, ChangeFilter("ns"))
    assert [c["index"] for c in page.changes] == [5, 6, 7] and page.through == 8
    assert page.compacted_through == 4


def test_watch_page_stops_at_its_byte_budget_after_a_whole_index(
    db: tuple[StateMachine, Reader, Log],
) -> None:
    machine, reader, log = db
    big = "x" * 1000
    log.add(PutNamespace("ns"))  # 1
    log.add(Batch(tuple(PutConfig("ns", f"b{i}", big) for i in range(3))))  # 2: 3 KB at once
    for i in range(4):
        log.add(PutConfig("ns", f"k{i}", big))  # 3..6
    apply(machine, log)
    # Index 2 alone is over the budget: it is sent whole, and the page stops after it.
    page = reader.watch(1, ChangeFilter("ns"), max_bytes=1500)
    assert [c["index"] for c in page.changes] == [2, 2, 2]
    assert page.through == 2 and page.cut_by_bytes
    page = reader.watch(2, ChangeFilter("ns"), max_bytes=2500)
    assert [c["index"] for c in page.changes] == [3, 4, 5] and page.through == 5
    page = reader.watch(5, ChangeFilter("ns"), max_bytes=2500)
    assert [c["index"] for c in page.changes] == [6] and page.through == 6
    assert not page.cut_by_bytes
    unbounded = reader.watch(0, ChangeFilter("ns"))
    assert len(unbounded.changes) == 8 and not unbounded.cut_by_bytes
