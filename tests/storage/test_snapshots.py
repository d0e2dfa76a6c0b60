"""Snapshot files: creation, retention, streaming, install, and loud refusal of damage."""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest

from confman.node.state.commands import PutConfig, PutNamespace
from confman.node.state.machine import StateMachine
from confman.node.state.queries import Reader
from confman.node.storage import snapshots
from confman.node.storage.snapshots import (
    SnapshotCorruptError,
    SnapshotInfo,
    SnapshotStore,
    install_snapshot,
    iter_chunks,
    verify,
)
from confman.raft.types import ConfState, SnapshotMeta
from tests.state.logbuilder import Log, replay

PRELUDE = struct.Struct(">8sHII")


@pytest.fixture
def log() -> Log:
    log = Log(term=3)
    log.conf(ConfState(("n1", "n2", "n3"), ("n4",)))
    log.add(PutNamespace("ns", "desc", "ops"))
    for i in range(30):
        log.add(PutConfig("ns", f"k{i % 7}", "v" * 200 + str(i)))
    return log


@pytest.fixture
def live(tmp_path: Path, log: Log) -> Iterator[tuple[StateMachine, Path]]:
    db = tmp_path / "live.db"
    with StateMachine(db) as machine:
        replay(machine, log)
        yield machine, db


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snaps")


def test_create_reads_index_term_membership_from_the_copy(
    live: tuple[StateMachine, Path], store: SnapshotStore
) -> None:
    machine, db = live
    info = store.create(db)
    assert (info.index, info.term) == (machine.applied_index, 3)
    assert info.conf_state == ConfState(("n1", "n2", "n3"), ("n4",))
    assert info.meta == SnapshotMeta(info.index, 3, info.conf_state)
    assert info.path.name == f"snapshot-{info.index:020d}-{3:020d}.snap"
    assert verify(info.path) == info == store.verify(info.path)
    assert store.latest() == info
    assert info.path.stat().st_size > info.size > 0
    assert sorted(p.name for p in store.dir.iterdir()) == [info.path.name]  # no temp files


def test_create_without_new_entries_keeps_the_existing_snapshot(
    live: tuple[StateMachine, Path], store: SnapshotStore
) -> None:
    _, db = live
    first = store.create(db)
    mtime = first.path.stat().st_mtime_ns
    assert store.create(db) == first
    assert first.path.stat().st_mtime_ns == mtime
    assert len(store.snapshots()) == 1


def test_retention_keeps_the_newest(tmp_path: Path, log: Log) -> None:
    store = SnapshotStore(tmp_path / "snaps", retain=2)
    (tmp_path / "snaps" / ".tmp-leftover.snap").write_bytes(b"half")  # from a crash
    store = SnapshotStore(tmp_path / "snaps", retain=2)
    assert list(store.dir.iterdir()) == []
    indexes = []
    with StateMachine(tmp_path / "s.db") as machine:
        for cut in (5, 10, 20, len(log.entries)):
            machine.apply(log.entries[machine.applied_index : cut], log.conf_states)
            indexes.append(store.create(tmp_path / "s.db").index)
    assert [s.index for s in store.snapshots()] == indexes[-2:]
    assert store.latest() is not None and store.latest().index == indexes[-1]  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path / "other", retain=0)


def test_empty_store_has_no_latest(store: SnapshotStore) -> None:
    assert store.latest() is None and store.snapshots() == []


def test_restore_replaces_state_and_a_new_reader_sees_it(
    tmp_path: Path, live: tuple[StateMachine, Path], store: SnapshotStore, log: Log
) -> None:
    machine, db = live
    info = store.create(db)
    expected = machine.state_digest()
    with StateMachine(tmp_path / "other.db") as other:
        other.apply(log.entries[:3], log.conf_states)  # older, with its own -wal file
        assert Path(f"{other.db_path}-wal").exists()
        other.restore(info.path)
        assert other.applied_index == info.index
        assert other.state_digest() == expected
        with Reader(other.db_path) as reader:
            assert reader.applied_index() == info.index
            assert len(reader.list_entries("ns")) == 7
    with StateMachine(tmp_path / "other.db") as reopened:
        assert reopened.state_digest() == expected
    assert not (tmp_path / "other.db.installing").exists()


def test_install_into_a_missing_database(
    tmp_path: Path, live: tuple[StateMachine, Path], store: SnapshotStore
) -> None:
    machine, db = live
    info = store.install(store.create(db).path, tmp_path / "fresh.db")
    with StateMachine(tmp_path / "fresh.db") as fresh:
        assert fresh.state_digest() == machine.state_digest()
        assert fresh.applied_index == info.index


def test_install_refuses_while_a_reader_keeps_the_old_wal_busy(
    tmp_path: Path, live: tuple[StateMachine, Path], store: SnapshotStore, log: Log
) -> None:
    _, db = live
    info = store.create(db)
    target = tmp_path / "other.db"
    other = StateMachine(target)
    other.apply(log.entries[:3], log.conf_states)
    # A connection that still reads an older state of the database (a reader left open by
    # mistake) while more is written: the newer frames cannot all be folded in, so the WAL
    # must not be deleted and the old database must keep every committed transaction.
    reader = sqlite3.connect(target, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT * FROM meta").fetchall()
        other.apply(log.entries[3:10], log.conf_states)
        before = other.state_digest()
        other.close()
        with pytest.raises(RuntimeError, match="not replacing the database"):
            install_snapshot(info.path, target)
        assert Path(f"{target}-wal").exists()
        reader.execute("COMMIT")
    finally:
        reader.close()
    with StateMachine(target) as kept:
        assert kept.applied_index == log.entries[9].index
        assert kept.state_digest() == before


# -- damage ----------------------------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _rewrite_prelude(path: Path, **fields: object) -> None:
    data = path.read_bytes()
    magic, version, length, crc = PRELUDE.unpack_from(data)
    values = {"magic": magic, "version": version, "length": length, "crc": crc, **fields}
    path.write_bytes(PRELUDE.pack(*values.values()) + data[PRELUDE.size :])


def _header_length(path: Path) -> int:
    return PRELUDE.unpack_from(path.read_bytes())[2]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _flip(p, p.stat().st_size - 100), "database checksum mismatch"),
        (lambda p: _flip(p, PRELUDE.size + _header_length(p) + 5000), "database checksum"),
        (lambda p: _flip(p, PRELUDE.size + 3), "header checksum mismatch"),
        (lambda p: os.truncate(p, p.stat().st_size - 1), r"truncated\?"),
        (lambda p: os.truncate(p, 30), "truncated header"),
        (lambda p: os.truncate(p, 4), "truncated header"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "header says"),
        (lambda p: _rewrite_prelude(p, magic=b"SQLite f"), "bad magic"),
        (lambda p: _rewrite_prelude(p, version=2), "unknown snapshot format version 2"),
        (lambda p: _rewrite_prelude(p, length=1 << 30), "implausible"),
    ],
    ids=[
        "body-end",
        "body-middle",
        "header",
        "truncated",
        "truncated-header",
        "stub",
        "extended",
        "magic",
        "version",
        "length",
    ],
)
def test_damaged_snapshots_are_refused_loudly(
    tmp_path: Path,
    live: tuple[StateMachine, Path],
    store: SnapshotStore,
    damage: object,
    message: str,
) -> None:
    machine, db = live
    info = store.create(db)
    damage(info.path)  # type: ignore[operator]
    with pytest.raises(SnapshotCorruptError, match=message) as caught:
        verify(info.path)
    assert str(info.path) in str(caught.value)
    # install and restore refuse it too, leaving the current state as it was
    before = machine.state_digest()
    with pytest.raises(SnapshotCorruptError, match=message):
        install_snapshot(info.path, tmp_path / "target.db")
    assert not (tmp_path / "target.db").exists()
    with pytest.raises(SnapshotCorruptError, match=message):
        machine.restore(info.path)
    assert machine.state_digest() == before
    assert not Path(f"{db}.installing").exists()


def test_header_that_disagrees_with_the_database_is_refused(
    tmp_path: Path, live: tuple[StateMachine, Path], store: SnapshotStore
) -> None:
    """A valid file whose header claims another index than its database holds."""
    _, db = live
    info = store.create(db)
    body = info.path.read_bytes()[PRELUDE.size + _header_length(info.path) :]
    forged = tmp_path / "forged.snap"
    header = snapshots._header_bytes(
        info.index + 1, info.term, info.conf_state, len(body), google_crc32c.value(body)
    )
    forged.write_bytes(header + body)
    assert verify(forged).index == info.index + 1  # the file itself is intact
    with pytest.raises(SnapshotCorruptError, match="database holds index"):
        install_snapshot(forged, tmp_path / "target.db")


def test_a_body_that_is_not_a_state_database_is_refused(tmp_path: Path) -> None:
    body = b"not a database at all" * 100
    path = tmp_path / "junk.snap"
    conf = ConfState(("a",))
    path.write_bytes(snapshots._header_bytes(1, 1, conf, len(body), google_crc32c.value(body)))
    with open(path, "ab") as f:
        f.write(body)
    with pytest.raises(SnapshotCorruptError, match="database unreadable"):
        install_snapshot(path, tmp_path / "target.db")


# -- streaming -------------------------------------------------------------------------------


def test_stream_to_another_store_in_chunks(
    tmp_path: Path, live: tuple[StateMachine, Path], store: SnapshotStore
) -> None:
    machine, db = live
    info = store.create(db)
    other = SnapshotStore(tmp_path / "peer")
    received = other.receive(store.chunks(info, chunk_size=1000))
    assert received.path.parent == other.dir
    assert (received.index, received.term, received.conf_state, received.checksum) == (
        info.index,
        info.term,
        info.conf_state,
        info.checksum,
    )
    assert received.path.read_bytes() == info.path.read_bytes()
    assert other.latest() == received
    with StateMachine(tmp_path / "peer.db") as peer:
        peer.restore(received.path)
        assert peer.state_digest() == machine.state_digest()


def test_receiver_write_by_write(
    live: tuple[StateMachine, Path], store: SnapshotStore, tmp_path: Path
) -> None:
    _, db = live
    info = store.create(db)
    other = SnapshotStore(tmp_path / "peer")
    rx = other.receiver()
    for chunk in iter_chunks(info.path, 4096):
        rx.write(chunk)
    assert other.latest() is None  # nothing is visible before it is verified
    assert rx.finish().checksum == info.checksum
    with pytest.raises(RuntimeError):
        rx.write(b"more")


@pytest.mark.parametrize("fault", ["flip", "cut", "aborted"])
def test_a_damaged_or_broken_stream_leaves_nothing_behind(
    live: tuple[StateMachine, Path], store: SnapshotStore, tmp_path: Path, fault: str
) -> None:
    _, db = live
    info = store.create(db)
    other = SnapshotStore(tmp_path / "peer")
    chunks = list(iter_chunks(info.path, 1000))

    def stream() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks):
            if i == len(chunks) // 2:
                if fault == "flip":
                    chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
                elif fault == "cut":
                    return
                else:
                    raise ConnectionResetError("peer went away")
            yield chunk

    expected = ConnectionResetError if fault == "aborted" else SnapshotCorruptError
    with pytest.raises(expected):
        other.receive(stream())
    assert list(other.dir.iterdir()) == []
    assert other.latest() is None


def test_receive_keeps_an_older_snapshot_it_was_sent(tmp_path: Path, log: Log) -> None:
    """Retention never deletes the snapshot that was just received."""
    source = SnapshotStore(tmp_path / "src", retain=5)
    with StateMachine(tmp_path / "s.db") as machine:
        machine.apply(log.entries[:5], log.conf_states)
        old = source.create(tmp_path / "s.db")
        replay(machine, log)
        new = source.create(tmp_path / "s.db")
    peer = SnapshotStore(tmp_path / "peer", retain=1)
    peer.receive(iter_chunks(new.path))
    kept = peer.receive(iter_chunks(old.path))
    assert kept.path.exists()
    assert isinstance(kept, SnapshotInfo)


def test_restore_with_a_reader_still_open_does_not_mix_in_the_old_wal(
    tmp_path: Path, live: tuple[StateMachine, Path], store: SnapshotStore, log: Log
) -> None:
    """A reader keeps the old database's -wal/-shm alive; they must not meet the new one."""
    machine, db = live
    info = store.create(db)
    expected = machine.state_digest()
    other_db = tmp_path / "other.db"
    with StateMachine(other_db) as other, Reader(other_db) as stale:
        other.apply(log.entries[:3], log.conf_states)
        assert stale.applied_index() == 3  # the reader has the WAL and shm mapped
        other.restore(info.path)
        assert other.state_digest() == expected
        log.add(PutConfig("ns", "after", "restore"))
        replay(other, log)
        assert stale.get_entry("ns", "after") is None  # it still reads the old file
        with Reader(other_db) as fresh:
            assert fresh.get_entry("ns", "after") is not None
        digest = other.state_digest()
    with StateMachine(other_db) as reopened:
        assert reopened.state_digest() == digest
