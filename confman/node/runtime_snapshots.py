"""Snapshot plumbing (docs/storage.md §6-§8).

- References in the core's ``Snapshot.data``: `LIVE_REF` (the live state database: what a
  node's own log starts after; nothing is copied) and ``[1, name]`` (a snapshot file
  received from a leader, kept until it is installed, then gone).
- `DumpSource`: what a SNAPSHOT message to a peer sends: a logical dump of the live
  database read in one read transaction on a connection of its own (``state.dump``).
- `SnapshotSink` / `ReceivedSnapshots`: a leader's stream received into a file, built into
  a database off the loop when the core hands the snapshot out.
- `Snapshotter`: every ``durable_every_entries`` applied entries or ``durable_every_ms``,
  on the snapshot thread, a PASSIVE checkpoint and the durable applied index; then, on the
  WAL thread, the marker and the release of the log up to it; in memory, the core's
  snapshot at that index and compaction keeping `CATCH_UP_ENTRIES`. When the SQLite WAL
  stays above its limit it parks the apply worker (`gate`) for a bounded time while a
  second checkpoint resets it; it returns free pages (``vacuum_step``) between slices.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack

from confman.node.metrics import NodeMetrics
from confman.node.peer_snapshot import SNAPSHOT_CHUNK, FileSource, SnapshotSource
from confman.node.runtime_common import Control
from confman.node.state.dump import Dump
from confman.node.state.durability import Durability, DurablePoint, Park
from confman.node.state.machine import StateMachine
from confman.node.storage.snapshots import SnapshotReceiver, SnapshotStore
from confman.node.storage.wal import WAL
from confman.raft.storage import MemoryStorage
from confman.raft.types import Message, Snapshot, SnapshotMeta

log = logging.getLogger("confman.node")

#: Entries kept in memory below a snapshot so slightly slow followers need no snapshot.
CATCH_UP_ENTRIES = 5_000
#: ``Snapshot.data`` of the live state database (a snapshot produced when it is sent).
LIVE_REF: bytes = msgpack.packb([3, "live"])
#: Applied entries between two looks at the SQLite WAL's size (a stat, on the loop).
WAL_STAT_EVERY = 128
#: Free pages returned per vacuum step (2 MiB of 8 KiB pages, ~4 ms).
VACUUM_PAGES = 256


def snapshot_ref(name: str) -> bytes:
    """``Snapshot.data`` of a snapshot file of this node's store."""
    data: bytes = msgpack.packb([1, name])
    return data


def snapshot_name(data: bytes) -> str:
    """The file name in a ``snapshot_ref`` (ValueError: not one)."""
    try:
        version, name = msgpack.unpackb(data)
    except Exception as exc:
        raise ValueError(f"bad snapshot reference {data!r}") from exc
    if version != 1 or not isinstance(name, str) or "/" in name or name.startswith("."):
        raise ValueError(f"bad snapshot reference {data!r}")
    return str(name)


class DumpSource:
    """A SNAPSHOT message's stream: a dump of the live database (blocking: sender threads).

    The core asked for its snapshot at ``A``; the read transaction sees ``B >= A`` (the
    state only moves forward), and the message is rewritten to ``B`` with the membership at
    ``B``: safe because ``B <= applied <= commit`` (docs/storage.md §7.2). A state behind
    ``A`` (a snapshot being installed here) is refused.
    """

    def __init__(self, db_path: Path, msg: Message) -> None:
        assert msg.snapshot is not None
        self._conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        try:
            self._dump = Dump(self._conn)
        except BaseException:
            self._conn.close()
            raise
        h = self._dump.header
        if h.index < msg.snapshot.meta.index:
            self.close()
            raise RuntimeError(
                f"the state database is at {h.index}, behind the snapshot at "
                f"{msg.snapshot.meta.index} the core sends"
            )
        meta = SnapshotMeta(h.index, h.term, h.conf_state)
        self.message = replace(msg, snapshot=Snapshot(meta, LIVE_REF))
        self.size: int | None = None
        self._records = self._pieces()

    def _pieces(self) -> Iterator[bytes]:
        for record in self._dump.records():
            for at in range(0, len(record), SNAPSHOT_CHUNK):
                yield record[at : at + SNAPSHOT_CHUNK]

    def read(self) -> bytes:
        return next(self._records, b"")

    def close(self) -> None:
        self._dump.close()
        self._conn.close()


def open_source(store: SnapshotStore, db_path: Path, msg: Message) -> SnapshotSource | None:
    """What to send for SNAPSHOT message ``msg`` (None: nothing known)."""
    if msg.snapshot is None:
        return None
    if msg.snapshot.data == LIVE_REF:
        return DumpSource(db_path, msg)
    try:
        return FileSource(str(store.dir / snapshot_name(msg.snapshot.data)), msg)
    except (ValueError, OSError):
        return None


class SnapshotSink:
    """Receives a snapshot stream from the leader into this node's snapshot store.

    ``finish`` runs on the event loop, so it only parks the received file: fsync, the
    database build and full verification happen off the loop when the core hands the
    snapshot out (`ReceivedSnapshots.settle`).
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
    """Snapshot streams received from a leader, parked until the core hands them out (or a
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
        """Keep a received stream until the core hands it out (or supersedes it)."""
        token = next(self._seq)
        self._parked[token] = rx
        return token

    async def settle(self, snap: Snapshot) -> Snapshot:
        """Build, verify and fsync a received snapshot (off the loop) before it counts."""
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
                f"received snapshot is at ({info.index}, {info.term}), the leader "
                f"announced ({snap.meta.index}, {snap.meta.term})"
            )
        return Snapshot(info.meta, snapshot_ref(info.path.name))

    def abort_all(self) -> None:
        for rx in self._parked.values():
            rx.abort()
        self._parked.clear()


@dataclass(frozen=True, slots=True)
class DurableSettings:
    """When the Snapshotter establishes durability, and the SQLite WAL and vacuum limits."""

    every_entries: int = 1000
    every_ms: int = 500
    wal_limit_bytes: int = 16 << 20
    park_max_ms: int = 20
    vacuum_threshold_bytes: int = 64 << 20


def release_log(wal: WAL, index: int, term: int) -> bool:
    """On the WAL thread, after the state is durable at (index, term): the marker (synced),
    then the release of the segments it covers (I3, I4). False: nothing to do (the log is
    already marked at or past ``index``, or does not reach it)."""
    if index <= wal.snapshot_index or index > wal.last_index:
        return False
    wal.save_snapshot_marker(index, term)
    wal.release_to(index)
    return True


class Snapshotter:
    """Durability, log release and SQLite WAL upkeep as entries are applied (see the module
    docstring). ``lock`` is held by every round and by a snapshot install."""

    def __init__(
        self,
        node_id: str,
        settings: DurableSettings,
        *,
        sm: StateMachine,
        storage: MemoryStorage,
        wal: WAL,
        durability: Durability,
        snap_exec: ThreadPoolExecutor,
        wal_exec: ThreadPoolExecutor,
        metrics: NodeMetrics,
        ctl: Control,
        last_index: int,
    ) -> None:
        self._id = node_id
        self._settings = settings
        self._sm = sm
        self._storage = storage
        self._wal = wal
        self.durability = durability
        self._snap_exec = snap_exec
        self._wal_exec = wal_exec
        self._metrics = metrics
        self._ctl = ctl
        #: Index of the latest snapshot the log starts after (released here or installed).
        self.last_index = last_index
        self.lock = asyncio.Lock()
        self._since = 0  # entries applied since the last round started
        self._since_stat = 0  # entries applied since the SQLite WAL's size was looked at
        self._running = False
        self._park: asyncio.Future[None] | None = None
        self._over_limit = 0  # rounds in a row that ended with the WAL above its limit
        #: Rounds that parked the apply worker (tests and logs).
        self.parks = 0

    def after_apply(self, count: int, applied_index: int) -> None:
        """``count`` more entries were applied, through ``applied_index``."""
        self._since += count
        self._since_stat += count
        if self._since >= self._settings.every_entries:
            self._start()
        elif self._since_stat >= WAL_STAT_EVERY:
            # Flat-out apply grows the SQLite WAL by several MiB per 1,000 entries: a round
            # (which parks apply and resets it) as soon as it passes its limit. One stat().
            self._since_stat = 0
            if self.durability.wal_bytes() > self._settings.wal_limit_bytes // 2:
                self._start()

    def _start(self) -> None:
        if self._running or self._ctl.stopping:
            return
        self._running = True
        self._since = 0
        self._ctl.spawn(self._round_task(), f"{self._id}-durable")

    async def run(self) -> None:
        """The timer: a round every ``every_ms`` while entries were applied since the last."""
        while not self._ctl.stopping:
            await asyncio.sleep(self._settings.every_ms / 1000)
            if self._since:
                self._start()

    def gate(self) -> asyncio.Future[None] | None:
        """What the apply worker awaits before its next slice (None: go on)."""
        park = self._park
        return park if park is not None and not park.done() else None

    async def _round_task(self) -> None:
        try:
            await self.round()
        except Exception:
            log.exception("durability round failed")
        finally:
            self._running = False

    async def round(self) -> DurablePoint:
        """One round: durability, log release, in-memory compaction, WAL upkeep, vacuum."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            point = await loop.run_in_executor(self._snap_exec, self.durability.round)
            await self._release(point)
            # At half the limit: apply goes on while the round runs (the PASSIVE copies what
            # was written so far), so the WAL's peak is that plus the writes meanwhile.
            if point.wal_bytes > self._settings.wal_limit_bytes // 2:
                self._over_limit += 1
                await self._park_apply()
            else:
                self._over_limit = 0
            if point.freelist_bytes > self._settings.vacuum_threshold_bytes:
                # On the loop, between two apply slices (none runs while this does), and
                # under the lock: no install closes the database meanwhile.
                freed = self._sm.vacuum_step(VACUUM_PAGES)
                log.debug("vacuum step returned %d pages", freed)
        return point

    async def _release(self, point: DurablePoint) -> None:
        if point.index <= self.last_index:
            return
        loop = asyncio.get_running_loop()
        released = await loop.run_in_executor(
            self._wal_exec, release_log, self._wal, point.index, point.term
        )
        storage = self._storage
        if not released or point.index <= storage.snapshot().meta.index:
            return
        if point.index > storage.last_index():
            return
        storage.create_snapshot(point.index, point.conf_state, LIVE_REF)
        keep_from = point.index - CATCH_UP_ENTRIES
        if keep_from > storage.first_index():
            storage.compact(keep_from)
        self.last_index = point.index
        self._metrics.snapshots.inc()

    async def _park_apply(self) -> None:
        """Hold the apply worker at its next slice while the tail checkpoint resets the WAL
        (bounded by ``park_max_ms``, unless TRUNCATE already holds the writer lock)."""
        loop = asyncio.get_running_loop()
        park = Park()
        self._park = loop.create_future()
        self.parks += 1
        work = loop.run_in_executor(self._snap_exec, self.durability.tail, park)
        try:
            try:
                async with asyncio.timeout(self._settings.park_max_ms / 1000):
                    await asyncio.shield(work)
            except TimeoutError:
                if not park.give_up():
                    await work  # TRUNCATE is running: apply must not take the lock
        finally:
            self._park.set_result(None)
            self._park = None
        result = await work
        if result != "truncated" and self._over_limit >= 2:
            log.warning(
                "SQLite WAL is %d bytes, above %d: a reader keeps it from being reset (%s)",
                self.durability.wal_bytes(),
                self._settings.wal_limit_bytes,
                result,
            )
