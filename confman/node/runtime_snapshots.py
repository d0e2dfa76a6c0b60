"""Snapshot plumbing: references to snapshot files in the core's ``Snapshot.data``; the sink
that receives a leader's snapshot stream and the received files parked until the core hands
them out (`ReceivedSnapshots`); and taking snapshots, SQLite checkpoints and log compaction
as entries are applied (`Snapshotter`)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack

from confman.node.metrics import NodeMetrics
from confman.node.runtime_common import Control
from confman.node.state.machine import StateMachine
from confman.node.storage.snapshots import SnapshotReceiver, SnapshotStore
from confman.node.storage.wal import WAL
from confman.raft.storage import MemoryStorage
from confman.raft.types import Message, Snapshot

log = logging.getLogger("confman.node")

#: Applied entries between two SQLite checkpoints (run off the loop).
CHECKPOINT_EVERY = 2000
#: Entries kept in memory below a snapshot so slightly slow followers need no snapshot.
CATCH_UP_ENTRIES = 5_000


def snapshot_ref(name: str) -> bytes:
    """``Snapshot.data`` of a snapshot file of this node's store."""
    data: bytes = msgpack.packb([1, name])
    return data


def snapshot_name(data: bytes) -> str:
    """The file name in a ``snapshot_ref``."""
    version, name = msgpack.unpackb(data)
    if version != 1 or "/" in name or name.startswith("."):
        raise ValueError(f"bad snapshot reference {data!r}")
    return str(name)


def snapshot_file(store: SnapshotStore, m: Message) -> str | None:
    """The file of the snapshot a message to a peer carries (None: none or unreadable)."""
    if m.snapshot is None:
        return None
    try:
        return str(store.dir / snapshot_name(m.snapshot.data))
    except Exception:
        return None


def jittered(interval: int) -> int:
    """``interval`` plus up to a quarter more, at random."""
    return interval + random.randint(0, interval // 4)


class SnapshotSink:
    """Receives a snapshot stream from the leader into this node's snapshot store.

    ``finish`` runs on the event loop, so it only parks the received file: fsync and full
    verification happen off the loop when the core hands the snapshot out
    (`ReceivedSnapshots.settle`).
    """

    def __init__(self, received: ReceivedSnapshots, store: SnapshotStore, msg: Message) -> None:
        self._received = received
        self._msg = msg
        self._rx = SnapshotReceiver(store)

    def write(self, chunk: bytes) -> None:
        self._rx.write(chunk)

    def finish(self) -> Message | None:
        m = self._msg
        if m.snapshot is None:
            self._rx.abort()
            return None
        token = self._received.park(self._rx)
        snap = Snapshot(m.snapshot.meta, msgpack.packb([2, token]))
        return Message(m.type, m.to, m.frm, m.term, snapshot=snap)

    def abort(self) -> None:
        self._rx.abort()


class ReceivedSnapshots:
    """Snapshot files received from a leader, parked until the core hands them out (or a
    newer one supersedes them); ``Snapshot.data`` carries ``[2, token]`` meanwhile."""

    def __init__(self, store: SnapshotStore, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor
        self._parked: dict[int, SnapshotReceiver] = {}
        self._seq = itertools.count(1)

    def sink(self, msg: Message) -> SnapshotSink:
        """Where the transport writes the stream of snapshot message ``msg``."""
        return SnapshotSink(self, self._store, msg)

    def park(self, rx: SnapshotReceiver) -> int:
        """Keep a received snapshot file until the core hands it out (or supersedes it)."""
        token = next(self._seq)
        self._parked[token] = rx
        return token

    async def settle(self, snap: Snapshot) -> Snapshot:
        """Make a received snapshot durable and verified (off the loop) before it counts."""
        version, ref = msgpack.unpackb(snap.data)
        if version == 1:
            return snap
        rx = self._parked.pop(ref, None)
        for older in [t for t in self._parked if t < ref]:  # superseded by this one
            self._parked.pop(older).abort()
        if version != 2 or rx is None:
            raise RuntimeError(f"snapshot at {snap.meta.index}: unknown received file {ref!r}")
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(self._executor, rx.finish)
        if (info.index, info.term) != (snap.meta.index, snap.meta.term):
            raise RuntimeError(
                f"received snapshot file is at ({info.index}, {info.term}), the leader "
                f"announced ({snap.meta.index}, {snap.meta.term})"
            )
        return Snapshot(info.meta, snapshot_ref(info.path.name))

    def abort_all(self) -> None:
        for rx in self._parked.values():
            rx.abort()
        self._parked.clear()


class Snapshotter:
    """Takes a snapshot every ``interval`` applied entries (plus jitter) and a SQLite
    checkpoint every `CHECKPOINT_EVERY`, both on the snapshot thread; after a snapshot,
    compacts the in-memory log (keeping `CATCH_UP_ENTRIES`) and the WAL (on its thread)."""

    def __init__(
        self,
        node_id: str,
        interval: int,
        *,
        store: SnapshotStore,
        sm: StateMachine,
        storage: MemoryStorage,
        wal: WAL,
        db_path: Path,
        snap_exec: ThreadPoolExecutor,
        wal_exec: ThreadPoolExecutor,
        metrics: NodeMetrics,
        ctl: Control,
        last_index: int,
    ) -> None:
        self._id = node_id
        self._interval = interval
        self._store = store
        self._sm = sm
        self._storage = storage
        self._wal = wal
        self._db_path = db_path
        self._snap_exec = snap_exec
        self._wal_exec = wal_exec
        self._metrics = metrics
        self._ctl = ctl
        #: Index of the latest snapshot the log starts after (taken or installed).
        self.last_index = last_index
        # Nodes apply the same entries at about the same time: without jitter all of them
        # would copy their database at the same moment, on a disk they may share.
        self._due = jittered(interval)
        self._since_checkpoint = 0
        self._checkpointing = False
        self._snapshotting = False

    def after_apply(self, count: int, applied_index: int) -> None:
        """``count`` more entries were applied, through ``applied_index``."""
        self._since_checkpoint += count
        if self._since_checkpoint >= CHECKPOINT_EVERY and not self._checkpointing:
            self._since_checkpoint = 0
            self._checkpointing = True
            self._ctl.spawn(self._checkpoint(), f"{self._id}-checkpoint")
        if self._snapshotting or self._ctl.stopping or applied_index - self.last_index < self._due:
            return
        self._snapshotting = True
        self._due = jittered(self._interval)
        self._ctl.spawn(self._take(), f"{self._id}-snapshot")

    async def _checkpoint(self) -> None:
        """Copy SQLite's WAL into the database on the snapshot thread (never on the loop)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._snap_exec, self._sm.checkpoint)
        except Exception:
            log.exception("SQLite checkpoint failed")
        finally:
            self._checkpointing = False

    async def _take(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(self._snap_exec, self._store.create, self._db_path)
            if info.index <= self._storage.snapshot().meta.index:
                return
            self._storage.create_snapshot(info.index, info.conf_state, snapshot_ref(info.path.name))
            keep_from = info.index - CATCH_UP_ENTRIES
            if keep_from > self._storage.first_index():
                self._storage.compact(keep_from)
            await loop.run_in_executor(self._wal_exec, self._compact_wal, info.index, info.term)
            self.last_index = info.index
            self._metrics.snapshots.inc()
            log.info("snapshot at %d (%d bytes)", info.index, info.size)
        except Exception:
            log.exception("snapshot failed")
        finally:
            self._snapshotting = False

    def _compact_wal(self, index: int, term: int) -> None:
        self._wal.save_snapshot_marker(index, term)
        self._wal.release_to(index)
