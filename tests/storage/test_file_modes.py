"""Files a node writes are its own: data files 0600, their directories 0700, whatever the
umask (issue 14, finding 7). SQLite's -wal/-shm files take the database's mode."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from confman.node.state.commands import PutNamespace, Request, encode_request
from confman.node.state.machine import StateMachine
from confman.node.storage.files import OSFileSystem
from confman.node.storage.snapshots import SnapshotStore
from confman.node.storage.wal import WAL
from confman.raft.types import Entry


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The modes must not rely on the process umask: run under the loosest one."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_os_file_system_creates_private_files_and_directories(tmp_path: Path) -> None:
    fs = OSFileSystem()
    fs.make_dirs(str(tmp_path / "a" / "b"))
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    f = fs.create(str(tmp_path / "a" / "b" / "seg"))
    f.close()
    assert mode(tmp_path / "a" / "b" / "seg") == 0o600


def test_opening_a_loose_file_for_appending_tightens_it(tmp_path: Path) -> None:
    path = tmp_path / "old-segment"
    path.write_bytes(b"")
    path.chmod(0o644)
    OSFileSystem().open_append(str(path)).close()
    assert mode(path) == 0o600


def test_wal_directory_and_segments_are_private(tmp_path: Path) -> None:
    with WAL.open(tmp_path / "wal", segment_bytes=2048) as wal:
        for i in range(1, 40):  # several segments
            wal.save(None, [Entry(1, i, data=b"x" * 200)])
    assert mode(tmp_path / "wal") == 0o700
    names = os.listdir(tmp_path / "wal")
    assert len(names) > 1
    assert {n: mode(tmp_path / "wal" / n) for n in names} == {n: 0o600 for n in names}


def _apply_one(machine: StateMachine, index: int) -> None:
    req = Request(PutNamespace(f"ns{index}", "", None), "t", "2026-02-13T10:00:00.000000Z")
    machine.apply([Entry(1, index, data=encode_request(req))])


def test_state_database_and_its_sqlite_journals_are_private(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with StateMachine(db) as machine:
        _apply_one(machine, 1)
        journals = [db.with_name(db.name + s) for s in ("-wal", "-shm")]
        assert all(p.exists() for p in journals)
        assert {p.name: mode(p) for p in [db, *journals]} == {
            p.name: 0o600 for p in [db, *journals]
        }


def test_an_existing_loose_state_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with StateMachine(db) as machine:
        _apply_one(machine, 1)
    db.chmod(0o644)
    with StateMachine(db):
        assert mode(db) == 0o600


def test_snapshots_and_an_installed_database_are_private(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = SnapshotStore(tmp_path / "snapshots")
    assert mode(tmp_path / "snapshots") == 0o700
    with StateMachine(db) as machine:
        _apply_one(machine, 1)
        info = store.create(db)
        assert mode(info.path) == 0o600
        _apply_one(machine, 2)
        machine.restore(info.path)
        assert machine.applied_index == 1
        assert mode(db) == 0o600


def test_an_existing_loose_snapshot_directory_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "snapshots").mkdir(mode=0o755)
    SnapshotStore(tmp_path / "snapshots")
    assert mode(tmp_path / "snapshots") == 0o700
