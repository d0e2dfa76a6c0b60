"""The node runtime in-process: durability across restarts, snapshots, WAL damage at start."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from confman.node.config import Member, NodeConfig
from confman.node.errors import NotLeader
from confman.node.runtime import Runtime
from confman.node.runtime_snapshots import LIVE_REF
from confman.node.state.commands import (
    DeleteConfig,
    PutConfig,
    PutNamespace,
    Request,
    format_timestamp,
)
from confman.node.state.dump import Dump
from confman.node.storage.snapshots import SnapshotStore
from confman.node.storage.wal import WALCorruptError


def _config(tmp: Path, **kw: Any) -> NodeConfig:
    return NodeConfig(
        node_id="solo",
        data_dir=tmp / "solo",
        members=(Member("solo", ("127.0.0.1", 1), "http://127.0.0.1:1/"),),
        cluster_secret=b"x" * 32,
        http_listen=("127.0.0.1", 0),
        http_advertise="http://127.0.0.1:0/",
        raft_listen=("127.0.0.1", 0),
        **kw,
    )


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _req(cmd: Any, n: int) -> Request:
    from datetime import UTC, datetime, timedelta

    ts = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return Request(cmd, "tester", format_timestamp(ts))


def _run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro_fn())


async def _started(cfg: NodeConfig) -> Runtime:
    rt = Runtime(cfg)
    rt.fatal = _no_exit
    await rt.start()
    await _until(lambda: rt.role == "leader")
    return rt


def _no_exit(code: int) -> None:
    raise AssertionError(f"runtime asked to exit with {code}")


async def _workload(rt: Runtime, start: int = 0) -> list[int]:
    versions = []
    await rt.propose(_req(PutNamespace("app", "the app", "ops"), start))
    for i in range(30):
        res = await rt.propose(_req(PutConfig("app", f"k{i % 7}", f"v{i}"), start + i + 1))
        assert res.value is not None
        versions.append(res.value["version"])
    await rt.propose(_req(DeleteConfig("app", "k3"), start + 99))
    return versions


def _snapshot_of_state(rt: Runtime) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    assert rt.reader is not None
    return rt.sm.state_digest(), rt.reader.audit("app", 1000), rt.reader.list_entries("app")


def test_restart_ten_times_changes_nothing(tmp_path: Path) -> None:
    """The original's replay drift: versions and audit actions must not change on restart."""

    async def main() -> None:
        cfg = _config(tmp_path)
        rt = await _started(cfg)
        versions = await _workload(rt)
        assert versions[:8] == [1, 1, 1, 1, 1, 1, 1, 2]
        before = _snapshot_of_state(rt)
        applied = rt.applied_index
        await rt.stop()
        for _ in range(10):
            rt = await _started(cfg)
            await _until(lambda rt=rt: rt.applied_index >= applied)  # type: ignore[misc]
            assert _snapshot_of_state(rt)[1:] == before[1:]
            await rt.stop()
        rt = await _started(cfg)
        res = await rt.propose(_req(PutConfig("app", "k0", "after"), 500))
        assert res.value is not None and res.value["version"] == 6  # k0: v0,v7,v14,v21,v28
        actions = [a["action"] for a in rt.reader.audit("app", 1000)]  # type: ignore[union-attr]
        assert actions.count("config.created") == 7 and actions.count("namespace.created") == 1
        await rt.stop()

    _run(main)


def test_log_is_released_against_the_live_database_with_nothing_copied(tmp_path: Path) -> None:
    """docs/storage.md §6: the WAL's marker follows the durable applied index, the core's
    snapshot is the live database, no snapshot file is written; a restart resumes from the
    database; a database that lost what the marker says was durable is refused."""

    async def main() -> None:
        cfg = _config(tmp_path, durable_every_entries=10, durable_every_ms=20)
        rt = await _started(cfg)
        await _workload(rt)
        await _until(lambda: rt.wal.snapshot_index >= rt.applied_index - 1)
        await _until(lambda: 0 < rt.wal.snapshot_index == rt.storage.snapshot().meta.index)
        assert rt.storage.snapshot().data == LIVE_REF
        assert not list((cfg.data_dir / "snapshots").iterdir()), "a snapshot file at rest"
        before = _snapshot_of_state(rt)
        applied, marker = rt.applied_index, rt.wal.snapshot_index
        await rt.stop()
        rt = await _started(cfg)
        assert rt.storage.first_index() == marker + 1  # the log starts after the marker
        await _until(lambda: rt.applied_index >= applied + 1)  # + the new term's no-op
        assert _snapshot_of_state(rt)[1:] == before[1:]
        await rt.stop()
        # Lose the state database: nothing else holds the entries the WAL released.
        for f in (cfg.data_dir).glob("state.db*"):
            f.unlink()
        rt = Runtime(cfg)
        with pytest.raises(RuntimeError, match="older than the durable index"):
            await rt.start()
        await rt.stop()

    _run(main)


def test_snapshot_files_of_an_older_release_are_used_only_when_ahead(tmp_path: Path) -> None:
    """A data directory with snapshots/ files (format 1): deleted at start when the state
    database is at or past them; restored when the database is behind (here: lost)."""

    async def main() -> None:
        cfg = _config(tmp_path, durable_every_entries=10, durable_every_ms=20)
        rt = await _started(cfg)
        await _workload(rt)
        await _until(lambda: rt.wal.snapshot_index >= rt.applied_index - 1)
        before = _snapshot_of_state(rt)
        applied = rt.applied_index
        await rt.stop()
        store = SnapshotStore(cfg.data_dir / "snapshots")
        old = store.create(cfg.data_dir / "state.db")  # what the older release kept
        assert old.index == applied and old.path.suffix == ".snap"
        rt = await _started(cfg)  # the database is at the file: it is deleted
        assert not old.path.exists()
        await rt.stop()
        old = store.create(cfg.data_dir / "state.db")
        for f in (cfg.data_dir).glob("state.db*"):
            f.unlink()
        rt = await _started(cfg)  # the database is behind the file: restored from it
        assert rt.sm.applied_index >= old.index and not old.path.exists()
        assert _snapshot_of_state(rt)[2] == before[2]
        await rt.stop()

    _run(main)


def test_received_snapshot_not_yet_installed_is_installed_at_start(tmp_path: Path) -> None:
    """The crash window of an install (docs/storage.md §12): the received database was kept
    (and the marker written) but not yet renamed over state.db: recovery installs it."""

    async def main() -> None:
        cfg = _config(tmp_path, durable_every_entries=10, durable_every_ms=20)
        rt = await _started(cfg)
        await _workload(rt)
        await _until(lambda: rt.wal.snapshot_index >= rt.applied_index - 1)
        before = _snapshot_of_state(rt)
        await rt.stop()
        conn = sqlite3.connect(cfg.data_dir / "state.db", isolation_level=None)
        dump = Dump(conn)
        stream = b"".join(dump.records())
        dump.close()
        conn.close()
        kept = SnapshotStore(cfg.data_dir / "snapshots").receive([stream])
        assert kept.path.suffix == ".db"
        for f in (cfg.data_dir).glob("state.db*"):
            f.unlink()
        rt = await _started(cfg)
        assert rt.sm.applied_index >= kept.index and not kept.path.exists()
        assert _snapshot_of_state(rt)[2] == before[2]
        await rt.stop()

    _run(main)


def test_torn_wal_tail_is_repaired_and_inner_damage_stops_the_node(tmp_path: Path) -> None:
    async def main() -> None:
        cfg = _config(tmp_path)
        rt = await _started(cfg)
        await _workload(rt)
        applied = rt.applied_index
        await rt.stop()
        seg = sorted((cfg.data_dir / "wal").glob("*.wal"))[-1]
        data = seg.read_bytes()
        seg.write_bytes(data + b"\x07" * 11)  # a torn, partial record at the tail
        rt = await _started(cfg)
        await _until(lambda: rt.applied_index >= applied)
        await rt.stop()
        data = bytearray(seg.read_bytes())
        data[200] ^= 0xFF  # damage inside the log, not at its tail
        seg.write_bytes(bytes(data))
        rt = Runtime(cfg)
        with pytest.raises(WALCorruptError, match=f"{seg.name}.*offset"):
            await rt.start()

    _run(main)


def test_follower_style_errors_before_proposing(tmp_path: Path) -> None:
    async def main() -> None:
        rt = await _started(_config(tmp_path))
        rt.core.transfer_leadership("nobody")  # ignored: not a voter
        assert rt.role == "leader" and rt.is_ready() and rt.last_contact_ms() == 0
        st = rt.status()
        assert st["applied"] == rt.applied_index and st["leader_url"]
        await rt.stop()
        with pytest.raises(Exception, match="stopping"):
            await rt.propose(_req(PutNamespace("x", None, None), 1))

    _run(main)


def test_not_leader_error_carries_leader_url() -> None:
    err = NotLeader("n2", "http://h:2/")
    assert err.leader_url == "http://h:2/" and "n2" in str(err)
