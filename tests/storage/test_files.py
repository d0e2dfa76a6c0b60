"""The real file-system layer and the power-loss model of FaultFS."""

from __future__ import annotations

import random

import pytest

from confman.node.storage.faultfs import FaultFS, SimulatedCrash
from confman.node.storage.files import OSFileSystem


def test_os_file_system_operations(tmp_path) -> None:
    fs = OSFileSystem()
    d = str(tmp_path / "a" / "b")
    fs.make_dirs(d)
    fs.make_dirs(d)  # idempotent
    f = fs.create(f"{d}/x")
    f.write(b"hello ")
    f.write(b"world")
    f.sync()
    f.truncate(5)
    f.sync()
    f.close()
    with pytest.raises(FileExistsError):
        fs.create(f"{d}/x")
    g = fs.open_append(f"{d}/x")
    g.write(b"!")
    g.close()
    assert fs.read(f"{d}/x") == b"hello!"
    fs.rename(f"{d}/x", f"{d}/y")
    fs.sync_dir(d)
    assert fs.list_dir(d) == ["y"]
    fs.remove(f"{d}/y")
    assert fs.list_dir(d) == []
    with pytest.raises(FileNotFoundError):
        fs.open_append(f"{d}/y")


def _write(fs: FaultFS, path: str, *chunks: bytes, sync: bool = False) -> None:
    f = fs.create(path)
    for c in chunks:
        f.write(c)
    if sync:
        f.sync()


def test_synced_data_and_names_always_survive() -> None:
    for seed in range(50):
        fs = FaultFS()
        fs.make_dirs("/d")
        _write(fs, "/d/a", b"one", b"two", sync=True)
        fs.sync_dir("/d")
        after = fs.crash(seed)
        assert after.files("/d") == {"a": b"onetwo"}


def test_unsynced_writes_survive_as_a_prefix_maybe_torn() -> None:
    outcomes = set()
    for seed in range(300):
        fs = FaultFS()
        fs.make_dirs("/d")
        f = fs.create("/d/a")
        f.write(b"AAAA")
        f.sync()
        fs.sync_dir("/d")
        f.write(b"BBBB")
        f.write(b"CCCC")
        data = fs.crash(seed).files("/d")["a"]
        assert data.startswith(b"AAAA")
        rest = data[4:]
        clean = [b"", b"BBBB", b"BBBBCCCC"]
        if rest in clean:
            outcomes.add(rest)
        else:  # torn: a proper prefix of the next write, then maybe garbage
            outcomes.add(b"torn")
            # whole writes kept, a proper prefix of the next (< 4 bytes), garbage (<= 4 bytes)
            assert rest.startswith(b"BBBB") or len(rest) <= 3 + 4
            assert len(rest) <= 4 + 3 + 4
    assert outcomes == {b"", b"BBBB", b"BBBBCCCC", b"torn"}


def test_unsynced_directory_changes_may_be_undone() -> None:
    seen = set()
    for seed in range(100):
        fs = FaultFS()
        fs.make_dirs("/d")
        _write(fs, "/d/old", b"x", sync=True)
        fs.sync_dir("/d")
        _write(fs, "/d/tmp", b"y", sync=True)
        fs.rename("/d/tmp", "/d/new")
        fs.remove("/d/old")
        names = tuple(sorted(fs.crash(seed).files("/d")))
        seen.add(names)
    # ops kept form a prefix: [create tmp, rename, remove old]
    assert seen == {("old",), ("old", "tmp"), ("new", "old"), ("new",)}


def test_sync_dir_makes_directory_changes_durable() -> None:
    fs = FaultFS()
    fs.make_dirs("/d")
    _write(fs, "/d/a", b"1", sync=True)
    fs.remove("/d/a")
    _write(fs, "/d/b", b"2", sync=True)
    fs.sync_dir("/d")
    for seed in range(30):
        assert fs.crash(seed).files("/d") == {"b": b"2"}


def test_files_are_independent_so_survivors_look_reordered() -> None:
    reordered = False
    for seed in range(200):
        fs = FaultFS()
        fs.make_dirs("/d")
        a = fs.create("/d/a")
        b = fs.create("/d/b")
        fs.sync_dir("/d")
        a.write(b"first")
        b.write(b"second")
        files = fs.crash(random.Random(seed)).files("/d")
        if files["a"] == b"" and files["b"] == b"second":
            reordered = True
    assert reordered


def test_crash_after_stops_every_later_operation() -> None:
    fs = FaultFS(crash_after=2)
    fs.make_dirs("/d")  # not counted: directories are created durably
    f = fs.create("/d/a")  # 1
    f.write(b"x")  # 2
    with pytest.raises(SimulatedCrash):
        f.sync()
    with pytest.raises(SimulatedCrash):
        f.write(b"y")
    assert fs.ops == 2
    assert fs.crash(0).list_dir("/d") in ([], ["a"])


def test_truncate_is_durable_only_after_sync() -> None:
    kept = set()
    for seed in range(40):
        fs = FaultFS()
        fs.make_dirs("/d")
        f = fs.create("/d/a")
        f.write(b"abcdef")
        f.sync()
        fs.sync_dir("/d")
        f.truncate(2)
        assert fs.read("/d/a") == b"ab"
        kept.add(fs.crash(seed).read("/d/a"))
    assert kept == {b"ab", b"abcdef"}


def test_write_sync_appends_after_earlier_writes(tmp_path) -> None:
    fs = OSFileSystem()
    path = str(tmp_path / "seg")
    f = fs.create(path)
    f.write(b"head")
    f.sync()
    f.write_sync(b"-one")  # type: ignore[attr-defined]
    f.write_sync(bytes(range(256)) * 300)  # type: ignore[attr-defined]
    f.close()
    assert fs.read(path) == b"head-one" + bytes(range(256)) * 300


def test_wal_uses_one_call_per_synced_write(tmp_path, monkeypatch) -> None:
    """The WAL's synced appends take the write_sync path (no separate fdatasync)."""
    from confman.node.storage import files
    from confman.node.storage.wal import WAL
    from confman.raft.types import Entry, HardState

    calls: list[str] = []
    real_sync = files._OSAppendFile.sync
    real_write_sync = files._OSAppendFile.write_sync
    monkeypatch.setattr(
        files._OSAppendFile, "sync", lambda s: (calls.append("sync"), real_sync(s))[1]
    )
    monkeypatch.setattr(
        files._OSAppendFile,
        "write_sync",
        lambda s, d: (calls.append("write_sync"), real_write_sync(s, d))[1],
    )
    wal = WAL.open(str(tmp_path / "wal"))
    calls.clear()
    wal.save(HardState(1, None, 0), [Entry(1, 1, data=b"x")], True)
    assert calls == ["write_sync"]
    wal.close()
    again = WAL.open(str(tmp_path / "wal"))
    assert [e.index for e in again.replay().entries] == [1]
    again.close()
