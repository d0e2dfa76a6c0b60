"""The asyncio runtime of one member: drives the Raft core, owns clock, transport, WAL and
state machine; proposals in, applied results out.

Threads: the event loop owns the core and applies committed entries in slices (SQLite
there never waits for the disk: synchronous=NORMAL, checkpoints elsewhere); the WAL is
written on one worker thread, snapshots and checkpoints taken on another, and recovery and
snapshot installs run on a third, so no fsync ever delays a tick, a heartbeat or a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from confman.node.config import Member, NodeConfig
from confman.node.errors import (
    NodeStopped,
    NoLeader,
    NotLeader,
    ProposalDropped,
    ReadTimeout,
    ReplicationTimeout,
)
from confman.node.metrics import NodeMetrics
from confman.node.peer_tls import load_contexts
from confman.node.state.commands import Request, encode_request
from confman.node.state.machine import ApplyResult, StateMachine
from confman.node.state.queries import Reader
from confman.node.storage.snapshots import SnapshotReceiver, SnapshotStore
from confman.node.storage.wal import WAL
from confman.node.transport import PeerTransport
from confman.raft.bootstrap import bootstrap_entries
from confman.raft.confchange import decode_conf_change
from confman.raft.config import Config
from confman.raft.node import RawNode
from confman.raft.ready import (
    Advance,
    HandOutEntries,
    HandOutSnapshot,
    KeepHardState,
    SaveSnapshot,
    Send,
    ServeReads,
    WriteLog,
    plan_ready,
)
from confman.raft.storage import MemoryStorage
from confman.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    Ready,
    Role,
    Snapshot,
)

log = logging.getLogger("confman.node")

_T = TypeVar("_T")
#: Committed entries applied in one go on the loop before it yields (~3 ms of work).
APPLY_SLICE = 64
#: Applied entries between two SQLite checkpoints (run off the loop).
CHECKPOINT_EVERY = 2000
#: Ticks run per loop iteration while catching up. Small enough that a node reads the
#: messages that arrived during a stall before its timers judge its peers silent (well
#: under election_tick_min - heartbeat_tick = 8); large enough that a saturated loop
#: (iterations of 30-50 ms under 256 clients) keeps pace with the clock, so a busy
#: leader still heartbeats on time. At 2 a leader's heartbeats slowed to 150+ ms there
#: and its followers started elections.
CATCH_UP_TICKS_PER_STEP = 5
#: Committed batches that may wait for the apply worker before the Ready loop waits too.
APPLY_QUEUE_BATCHES = 64
#: Entries kept in memory below a snapshot so slightly slow followers need no snapshot.
CATCH_UP_ENTRIES = 5_000

ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.FOLLOWER: "follower",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",
}


@dataclass(slots=True)
class _Proposal:
    data: bytes
    future: asyncio.Future[ApplyResult]
    started: float


class _SnapshotSink:
    """Receives a snapshot stream from the leader into this node's snapshot store.

    ``finish`` runs on the event loop, so it only parks the received file: fsync and full
    verification happen off the loop when the core hands the snapshot out (``_settle``).
    """

    def __init__(self, runtime: Runtime, msg: Message) -> None:
        self._rt = runtime
        self._msg = msg
        self._rx = SnapshotReceiver(runtime.snapshots)

    def write(self, chunk: bytes) -> None:
        self._rx.write(chunk)

    def finish(self) -> Message | None:
        m = self._msg
        if m.snapshot is None:
            self._rx.abort()
            return None
        token = self._rt._park_received(self._rx)
        snap = Snapshot(m.snapshot.meta, msgpack.packb([2, token]))
        return Message(m.type, m.to, m.frm, m.term, snapshot=snap)

    def abort(self) -> None:
        self._rx.abort()


def _snapshot_ref(name: str) -> bytes:
    return msgpack.packb([1, name])


def _snapshot_name(data: bytes) -> str:
    version, name = msgpack.unpackb(data)
    if version != 1 or "/" in name or name.startswith("."):
        raise ValueError(f"bad snapshot reference {data!r}")
    return str(name)


class Runtime:
    """One Confman node. ``await start()``, then use the proposal/read API, ``await stop()``."""

    def __init__(self, cfg: NodeConfig, *, bugs: frozenset[str] = frozenset()) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.bugs = bugs  # test-only deliberate faults (see tests/cluster)
        self.metrics = NodeMetrics(cfg.node_id)
        self.data_dir = Path(cfg.data_dir)
        self.db_path = self.data_dir / "state.db"
        self.members: dict[str, Member] = {m.id: m for m in cfg.members}
        self._tick_s = cfg.tick_ms / 1000
        self._wal_exec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-wal")
        self._apply_exec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-apply")
        self._snap_exec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-snap")
        self._since_checkpoint = 0
        # Nodes apply the same entries at about the same time: without jitter all of them
        # would copy their database at the same moment, on a disk they may share.
        self._snapshot_due = _jittered(cfg.snapshot_interval)
        self._checkpointing = False
        self._wake = asyncio.Event()
        self._pending: list[_Proposal] = []
        self._waiting: dict[int, tuple[int, _Proposal]] = {}  # index -> (term, proposal)
        self._reads: list[asyncio.Future[int]] = []  # ReadIndex requests to batch
        self._read_waiters: dict[bytes, list[asyncio.Future[int]]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._read_ctx = itertools.count(1)
        self._tasks: list[asyncio.Task[Any]] = []
        #: Committed work for the apply worker, in log order: entry batches and snapshots.
        self._apply_q: asyncio.Queue[tuple[list[Entry], dict[int, ConfState]] | Snapshot] = (
            asyncio.Queue(maxsize=APPLY_QUEUE_BATCHES)
        )
        self._stopping = False
        self._snapshotting = False
        self._received: dict[int, SnapshotReceiver] = {}  # parked incoming snapshots
        self._received_seq = itertools.count(1)
        self._last_snap_index = 0
        self._clock_last = 0.0
        self._leader: str | None = None
        self._role = Role.FOLLOWER
        self._leader_term = 0
        self._led_until: float | None = None  # when this node last stopped leading
        self._persisted_vote: tuple[int, str | None] = (0, None)
        self.core: RawNode
        self.storage: MemoryStorage
        self.wal: WAL
        self.sm: StateMachine
        self.reader: Reader | None = None  # None while a snapshot is being installed
        self.snapshots: SnapshotStore
        self.transport: PeerTransport
        self.applied_index = 0
        #: What to do when the node cannot continue safely (tests replace it).
        self.fatal: Callable[[int], None] = os._exit
        #: Called on the loop after every applied batch with (entries, results), and with
        #: two empty lists after a snapshot replaced the state.
        self.on_applied: list[Callable[[list[Entry], list[ApplyResult]], None]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Recover state from disk, then start the transport, clock and Ready loop."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._apply_exec, self._recover)
        self.reader = Reader(self.db_path)  # used on the loop thread only
        peers = {m.id: m.raft for m in self.members.values() if m.id != self.id}
        # Membership reaches the transport as its peer set: here, then from every applied
        # membership change (_on_conf_change -> update_peers); only those peers are admitted.
        tls = load_contexts(self.cfg.raft_tls) if self.cfg.raft_tls is not None else None
        refused = self.metrics.peer_refused
        self.transport = PeerTransport(
            self.id,
            self.cfg.cluster_secret,
            self.cfg.raft_listen,
            peers,
            on_message=self._on_message,
            on_unreachable=self._on_unreachable,
            snapshot_file=self._snapshot_file,
            open_snapshot_sink=lambda m, size: _SnapshotSink(self, m),
            on_snapshot_status=self._on_snapshot_status,
            tls=tls,
            on_refused=lambda reason: refused.labels(reason=reason).inc(),
        )
        await self.transport.start()
        self._clock_last = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"{self.id}-ready"),
            asyncio.create_task(self._ticker(), name=f"{self.id}-tick"),
            asyncio.create_task(self._apply_worker(), name=f"{self.id}-apply"),
        ]
        log.info(
            "node %s started: term %d, commit %d, applied %d, members %s",
            self.id,
            self.core.term,
            self.core.commit_index,
            self.applied_index,
            ",".join(self.core.voters),
        )

    def _recover(self) -> None:
        """Open SQLite, restore a newer snapshot, open and replay the WAL (worker thread)."""
        self.snapshots = SnapshotStore(self.data_dir / "snapshots", self.cfg.snapshot_retain)
        self.sm = StateMachine(self.db_path)
        latest = self.snapshots.latest()
        if latest is not None and latest.index > self.sm.applied_index:
            log.info(
                "restoring snapshot at %d (state was at %d)", latest.index, self.sm.applied_index
            )
            self.sm.restore(latest.path)
        self.wal = WAL.open(self.data_dir / "wal")
        ws = self.wal.replay()
        storage = MemoryStorage()
        entries = ws.entries
        hard_state = ws.hard_state
        base = None
        if ws.snapshot_index:
            base = next(
                (s for s in self.snapshots.snapshots() if s.index == ws.snapshot_index), None
            )
            if base is None:
                raise RuntimeError(
                    f"WAL refers to a snapshot at {ws.snapshot_index} that is not in "
                    f"{self.snapshots.dir}"
                )
        if latest is not None and latest.index > ws.snapshot_index:
            # A snapshot was kept (taken, or received and installed) but the node stopped
            # before the WAL recorded it: make the WAL agree, as the marker would have.
            if any(e.index == latest.index and e.term == latest.term for e in entries):
                entries = [e for e in entries if e.index > latest.index]
            else:
                entries = []
            self.wal.save_snapshot_marker(latest.index, latest.term)
            base = latest
        if base is not None:
            storage.apply_snapshot(Snapshot(base.meta, _snapshot_ref(base.path.name)))
            self._last_snap_index = base.index
            if hard_state.commit < base.index:
                hard_state = HardState(hard_state.term, hard_state.vote, base.index)
        if entries:
            storage.append(entries)
        storage.set_hard_state(hard_state)
        if storage.last_index() == 0 and self.sm.applied_index == 0:
            ents, hs = bootstrap_entries(self.members)
            self.wal.save(hs, ents, sync=True)
            storage.append(ents)
            storage.set_hard_state(hs)
            log.info("bootstrapped a new cluster: %s", ", ".join(sorted(self.members)))
        if self.sm.applied_index > storage.last_index():
            raise RuntimeError(
                f"state database applied {self.sm.applied_index} but the WAL ends at "
                f"{storage.last_index()}: the WAL was lost or belongs to another node"
            )
        if self.sm.applied_index < storage.first_index() - 1:
            raise RuntimeError(
                f"state database at {self.sm.applied_index} is older than the snapshot at "
                f"{storage.first_index() - 1} and no snapshot file covers it"
            )
        if storage.hard_state.commit < self.sm.applied_index:
            hs = storage.hard_state
            storage.set_hard_state(HardState(hs.term, hs.vote, self.sm.applied_index))
        self._persisted_vote = (storage.hard_state.term, storage.hard_state.vote)
        storage.conf_state = self.sm.conf_state() if self.sm.applied_index else ConfState()
        self.storage = storage
        self.applied_index = self.sm.applied_index
        lo, hi = self.cfg.election_ticks
        raft_cfg = Config(
            id=self.id,
            election_tick_min=lo,
            election_tick_max=hi,
            heartbeat_tick=self.cfg.heartbeat_ticks,
            applied=self.sm.applied_index,
            rng=random.Random(),
        )
        self.core = RawNode(raft_cfg, storage)
        self._role = self.core.role

    async def stop(self) -> None:
        """Stop the loop, transport and threads; pending callers get ``NodeStopped``."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if hasattr(self, "transport"):
            await self.transport.stop()
        self._fail_all(NodeStopped("node is stopping"))
        for rx in self._received.values():
            rx.abort()
        self._received.clear()
        loop = asyncio.get_running_loop()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        await loop.run_in_executor(self._apply_exec, self._close_stores)
        await loop.run_in_executor(self._wal_exec, self.wal.close)
        for ex in (self._wal_exec, self._apply_exec, self._snap_exec):
            ex.shutdown(wait=True)

    def _close_stores(self) -> None:
        try:
            self.sm.close()
        except Exception:  # pragma: no cover - best effort on shutdown
            log.exception("error while closing the state machine")

    def _fail_all(self, exc: Exception) -> None:
        for p in self._pending:
            _set_exc(p.future, exc)
        self._pending.clear()
        for _, p in self._waiting.values():
            _set_exc(p.future, exc)
        self._waiting.clear()
        for f in self._reads:
            _set_exc(f, exc)
        self._reads.clear()
        for fs in self._read_waiters.values():
            for f in fs:
                _set_exc(f, exc)
        self._read_waiters.clear()
        for _, _, f in self._applied_waiters:
            _set_exc(f, exc)
        self._applied_waiters.clear()

    # ------------------------------------------------------------------ observers
    @property
    def role(self) -> str:
        return ROLE_NAMES[self.core.role]

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def leader_id(self) -> str | None:
        return self.core.leader

    @property
    def leader_url(self) -> str | None:
        lead = self.core.leader
        m = self.members.get(lead) if lead else None
        return m.http if m else None

    @property
    def commit_index(self) -> int:
        return self.core.commit_index

    def _ticks_since_contact(self) -> int:
        if self.core.role == Role.LEADER:
            return 0
        return self.core.ticks_since_contact() + max(0, self._pending_ticks())

    def last_contact_ms(self) -> int:
        """Milliseconds since this node last heard from a leader (0 on a leader)."""
        return self._ticks_since_contact() * self.cfg.tick_ms

    def is_ready(self) -> bool:
        """A leader is known and this node is in contact with it (or, as leader, a quorum)."""
        if self.core.leader is None:
            return False
        if self.core.role == Role.LEADER:
            return True  # check-quorum makes it step down when the quorum is lost
        return self._ticks_since_contact() < self.cfg.election_ticks[0]

    def status(self) -> dict[str, Any]:
        st = self.core.status()
        st["applied"] = self.applied_index
        st["leader_url"] = self.leader_url
        return st

    # ------------------------------------------------------------------ proposals
    async def propose(self, request: Request, timeout: float | None = None) -> ApplyResult:
        """Replicate a command; returns its applied result once committed and applied here.

        Raises NotLeader/NoLeader before anything is proposed, ProposalDropped when the
        entry was definitely lost, ReplicationTimeout when the outcome is unknown.
        """
        return await self.propose_bytes(encode_request(request), timeout)

    async def propose_bytes(self, data: bytes, timeout: float | None = None) -> ApplyResult:
        if self._stopping:
            raise NodeStopped("node is stopping")
        self._check_leader()
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Proposal(data, fut, time.perf_counter()))
        self._wake.set()
        t = self.cfg.replication_timeout_ms / 1000 if timeout is None else timeout
        try:
            return await _wait(fut, t)
        except TimeoutError:
            self.metrics.proposal_failures.labels(reason="timeout").inc()
            raise ReplicationTimeout(
                f"commitment not confirmed within {t:g}s; the write may still be applied"
            ) from None

    def _check_leader(self) -> None:
        if self.core.role != Role.LEADER:
            if self.core.leader is None:
                raise NoLeader("no leader is known")
            raise NotLeader(self.core.leader, self.leader_url)

    def _flush_proposals(self) -> None:
        batch, self._pending = self._pending, []
        if self.core.role != Role.LEADER:
            exc: Exception = (
                NotLeader(self.core.leader, self.leader_url)
                if self.core.leader
                else NoLeader("no leader is known")
            )
            for p in batch:
                _set_exc(p.future, exc)
            return
        try:
            first = self.core.propose_many([p.data for p in batch])
        except (NotLeaderError, ProposalDroppedError) as e:
            for p in batch:
                _set_exc(p.future, ProposalDropped(str(e)))
            return
        term = self.core.term
        for i, p in enumerate(batch):
            self._waiting[first + i] = (term, p)
        self.metrics.proposals.inc(len(batch))
        self.metrics.batch_size.observe(len(batch))

    # ------------------------------------------------------------------ reads
    async def read_index(self, timeout: float = 5.0) -> int:
        """Linearizable read barrier: returns an index applied here that reflects every
        write acknowledged before the call (ReadIndex; works on followers)."""
        if self._stopping:
            raise NodeStopped("node is stopping")
        if self.core.leader is None:
            raise NoLeader("no leader is known")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads.append(fut)
        self._wake.set()
        deadline = time.monotonic() + timeout
        try:
            index = await _wait(fut, timeout)
        except TimeoutError:
            fut.cancel()
            self._forget_read(fut)
            raise ReadTimeout("leadership could not be confirmed in time") from None
        await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
        return index

    def lease_read_index(self) -> int | None:
        """Commit index a leader may serve under its lease, or None (not leader/no lease)."""
        self._advance_clock()
        return self.core.lease_read_index()

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Wait until this node has applied ``index``; ReadTimeout otherwise."""
        if self.applied_index >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._seq), fut))
        try:
            await _wait(fut, timeout)
        except TimeoutError:
            fut.cancel()
            self._applied_waiters = [w for w in self._applied_waiters if w[2] is not fut]
            heapq.heapify(self._applied_waiters)
            raise ReadTimeout(f"index {index} not applied within {timeout:g}s") from None

    def _forget_read(self, fut: asyncio.Future[int]) -> None:
        if fut in self._reads:
            self._reads.remove(fut)
        for ctx, futs in list(self._read_waiters.items()):
            if fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._read_waiters[ctx]

    def _flush_reads(self) -> None:
        reads, self._reads = self._reads, []
        if "node:stale_linearizable" in self.bugs:
            for f in reads:  # deliberate bug: no ReadIndex round at all
                _set_result(f, self.applied_index)
            return
        ctx = f"{self.id}:{next(self._read_ctx)}".encode()
        try:
            self.core.read_index(ctx)
        except NotLeaderError:
            for f in reads:
                _set_exc(f, NoLeader("no leader is known"))
            return
        self._read_waiters[ctx] = reads

    # ------------------------------------------------------------------ clock and input
    def _pending_ticks(self) -> int:
        return int((time.monotonic() - self._clock_last) / self._tick_s)

    def _advance_clock(self, limit: int | None = None) -> int:
        """Run (up to ``limit`` of) the ticks that elapsed on the monotonic clock; returns
        how many are still due."""
        n = self._pending_ticks()
        if n <= 0:
            return 0
        k = n if limit is None else min(n, limit)
        self._clock_last += k * self._tick_s
        for _ in range(k):
            self.core.tick()
        self._send_heartbeats()
        self._wake.set()
        return n - k

    def _send_heartbeats(self) -> None:
        """Send heartbeats and their responses now, even while the Ready loop waits for an
        fsync: a slow disk must not look like a dead leader or a lost quorum."""
        if msgs := self.core.take_heartbeats():
            self.transport.send(msgs)

    async def _ticker(self) -> None:
        """Tick by the monotonic clock. After a stall (GC, CPU starvation, SIGSTOP) the
        missed ticks are caught up a few at a time, letting the loop read the messages that
        arrived meanwhile in between, so a node that was merely slow does not mistake its own
        stall for silence of its peers (no needless step-down or election)."""
        while not self._stopping:
            await asyncio.sleep(self._tick_s)
            while self._advance_clock(limit=CATCH_UP_TICKS_PER_STEP) > 0:
                await asyncio.sleep(0)

    def _on_message(self, m: Message) -> None:
        if self._stopping:
            return
        self.core.step(m)
        self._send_heartbeats()
        self._wake.set()

    def _on_unreachable(self, peer: str) -> None:
        self.core.report_unreachable(peer)
        self._wake.set()

    def _on_snapshot_status(self, peer: str, ok: bool) -> None:
        self.core.report_snapshot(peer, ok)
        self._wake.set()

    def _park_received(self, rx: SnapshotReceiver) -> int:
        """Keep a received snapshot file until the core hands it out (or supersedes it)."""
        token = next(self._received_seq)
        self._received[token] = rx
        return token

    async def _settle_snapshot(self, snap: Snapshot) -> Snapshot:
        """Make a received snapshot durable and verified (off the loop) before it counts."""
        version, ref = msgpack.unpackb(snap.data)
        if version == 1:
            return snap
        rx = self._received.pop(ref, None)
        for older in [t for t in self._received if t < ref]:  # superseded by this one
            self._received.pop(older).abort()
        if version != 2 or rx is None:
            raise RuntimeError(f"snapshot at {snap.meta.index}: unknown received file {ref!r}")
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(self._snap_exec, rx.finish)
        if (info.index, info.term) != (snap.meta.index, snap.meta.term):
            raise RuntimeError(
                f"received snapshot file is at ({info.index}, {info.term}), the leader "
                f"announced ({snap.meta.index}, {snap.meta.term})"
            )
        return Snapshot(info.meta, _snapshot_ref(info.path.name))

    def _snapshot_file(self, m: Message) -> str | None:
        if m.snapshot is None:
            return None
        try:
            return str(self.snapshots.dir / _snapshot_name(m.snapshot.data))
        except Exception:
            return None

    # ------------------------------------------------------------------ the Ready loop
    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._wake.wait()
                self._wake.clear()
                while not self._stopping:
                    if self._pending:
                        self._flush_proposals()
                    if self._reads:
                        self._flush_reads()
                    if not self.core.has_ready():
                        break
                    await self._handle_ready(self.core.ready())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical("node %s: fatal error in the Ready loop; stopping", self.id, exc_info=True)
            self._fail_all(NodeStopped("node failed"))
            self.fatal(70)

    async def _handle_ready(self, rd: Ready) -> None:
        """Execute the Ready's plan (``confman.raft.ready``: what is durable before what)."""
        loop = asyncio.get_running_loop()
        if rd.soft_state is not None:  # before planning: the plan asks whether we lead
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        steps = plan_ready(
            rd,
            leader=self.core.role == Role.LEADER,
            durable=self._persisted_vote,
            latest=self.storage.hard_state,
        )
        snap: Snapshot | None = None
        for step in steps:
            match step:
                case KeepHardState(hard_state=hs):
                    self.storage.set_hard_state(hs)
                case Send(messages=msgs):
                    self.transport.send(msgs)
                case SaveSnapshot(snapshot=received):
                    snap = await self._settle_snapshot(received)
                    meta = snap.meta
                    await loop.run_in_executor(
                        self._wal_exec, self.wal.save_snapshot_marker, meta.index, meta.term
                    )
                    self.storage.apply_snapshot(snap)
                    self._last_snap_index = meta.index
                case HandOutSnapshot():
                    assert snap is not None
                    await self._apply_q.put(snap)
                case WriteLog(entries=ents, hard_state=hs, sync=sync):
                    t0 = time.perf_counter()
                    sync = sync and "node:ack_before_fsync" not in self.bugs
                    await loop.run_in_executor(self._wal_exec, self.wal.save, hs, ents, sync)
                    self.metrics.fsync_latency.observe(time.perf_counter() - t0)
                    self._persisted_vote = (hs.term, hs.vote)
                    if ents:
                        self.storage.append(ents)
                case HandOutEntries(entries=ents):
                    await self._apply_q.put((ents, self._conf_changes(ents)))
                case ServeReads(read_states=states):
                    for rs in states:
                        for f in self._read_waiters.pop(rs.context, []):
                            _set_result(f, rs.index)
                case Advance():
                    self.core.advance(rd)
        self._update_gauges()

    def _on_soft_state(self, leader: str | None, role: Role) -> None:
        if leader != self._leader:
            if leader is not None:
                self.metrics.leader_changes.inc()
            log.info(
                "node %s: leader is now %s (term %d)", self.id, leader or "unknown", self.core.term
            )
            self._leader = leader
        if role != self._role:
            if role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and self._role not in (
                Role.CANDIDATE,
                Role.PRE_CANDIDATE,
            ):
                self.metrics.elections.inc()
                heard_ms = 0 if self._role == Role.LEADER else self.last_contact_ms()
                if self._led_until is not None:  # it was the leader itself more recently
                    heard_ms = min(heard_ms, int((time.monotonic() - self._led_until) * 1000))
                log.warning(
                    "node %s: starting an election in term %d (leader last heard %d ms ago)",
                    self.id,
                    self.core.term,
                    heard_ms,
                )
            if self._role == Role.LEADER:
                self._led_until = time.monotonic()
                log.warning(
                    "node %s: stepped down as leader of term %d (now %s in term %d)",
                    self.id,
                    self._leader_term,
                    ROLE_NAMES[role],
                    self.core.term,
                )
                # Reads waiting on a leadership confirmation will never get it now.
                for fs in self._read_waiters.values():
                    for f in fs:
                        _set_exc(f, NoLeader("leadership lost"))
                self._read_waiters.clear()
            self._role = role
            if role == Role.LEADER:
                self._leader_term = self.core.term
            for r in ROLE_NAMES.values():
                self.metrics.role.labels(role=r).set(0)
            self.metrics.role.labels(role=ROLE_NAMES[role]).set(1)

    def _conf_changes(self, entries: list[Entry]) -> dict[int, ConfState]:
        """Apply membership changes to the core, in log order, as they are handed out."""
        conf_states: dict[int, ConfState] = {}
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                try:
                    cc = decode_conf_change(e.data)
                except ValueError:
                    log.error("entry %d: undecodable membership change ignored", e.index)
                    conf_states[e.index] = self.core.conf_state()
                    continue
                conf_states[e.index] = self.core.apply_conf_change(cc)
                self._on_conf_change(cc.node_id, cc.context)
        return conf_states

    async def _apply_worker(self) -> None:
        """Apply committed batches and snapshots in order, off the Ready loop."""
        while True:
            item = await self._apply_q.get()
            try:
                if isinstance(item, Snapshot):
                    await self._install_snapshot(item)
                else:
                    await self._apply(*item)
            except Exception:
                log.critical("node %s: applying failed; stopping", self.id, exc_info=True)
                self._fail_all(NodeStopped("node failed"))
                self.fatal(70)
                return

    async def _apply(self, entries: list[Entry], conf_states: dict[int, ConfState]) -> None:
        # On the loop thread, in slices. A worker thread would trade the GIL back and forth
        # with the busy loop at every SQLite call: measured 10x slower than the work itself.
        # Nothing here waits for the disk (synchronous=NORMAL; checkpoints run elsewhere).
        for start in range(0, len(entries), APPLY_SLICE):
            if start:
                await asyncio.sleep(0)  # let heartbeats and requests through
            self._apply_slice(entries[start : start + APPLY_SLICE], conf_states)

    def _apply_slice(self, entries: list[Entry], conf_states: dict[int, ConfState]) -> None:
        t0 = time.perf_counter()
        results = self.sm.apply(entries, conf_states)
        self.metrics.apply_latency.observe(time.perf_counter() - t0)
        self._since_checkpoint += len(entries)
        if self._since_checkpoint >= CHECKPOINT_EVERY and not self._checkpointing:
            self._since_checkpoint = 0
            self._checkpointing = True
            task = asyncio.create_task(self._checkpoint(), name=f"{self.id}-checkpoint")
            self._tasks.append(task)
        self.applied_index = entries[-1].index
        now = time.perf_counter()
        for e, res in zip(entries, results, strict=True):
            waiting = self._waiting.pop(e.index, None)
            if waiting is None:
                continue
            term, p = waiting
            if term == e.term:
                self.metrics.commit_latency.observe(now - p.started)
                _set_result(p.future, res)
            else:
                self.metrics.proposal_failures.labels(reason="dropped").inc()
                _set_exc(p.future, ProposalDropped("the entry was replaced by a new leader"))
        self._wake_applied_waiters()
        self.metrics.applied_index.set(self.applied_index)
        self._maybe_snapshot()
        self._notify_applied(entries, results)

    def _notify_applied(self, entries: list[Entry], results: list[ApplyResult]) -> None:
        """Run the ``on_applied`` callbacks (empty lists after a snapshot install)."""
        for cb in self.on_applied:
            try:
                cb(entries, results)
            except Exception:
                log.exception("on_applied callback failed")

    def _wake_applied_waiters(self) -> None:
        while self._applied_waiters and self._applied_waiters[0][0] <= self.applied_index:
            _set_result(heapq.heappop(self._applied_waiters)[2], None)

    def _on_conf_change(self, node_id: str, context: bytes) -> None:
        if context:
            try:
                raft, http = msgpack.unpackb(context)
                host, port = raft
                self.members[node_id] = Member(node_id, (str(host), int(port)), str(http))
            except Exception:
                log.warning("membership change for %s has an unreadable address", node_id)
        peers = {
            i: m.raft
            for i, m in self.members.items()
            if i != self.id and (i in self.core.voters or i in self.core.learners)
        }
        self.transport.update_peers(peers)

    async def _install_snapshot(self, snap: Snapshot) -> None:
        """Replace the state with a snapshot received from the leader (apply worker)."""
        loop = asyncio.get_running_loop()
        path = self.snapshots.dir / _snapshot_name(snap.data)
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        try:
            await loop.run_in_executor(self._apply_exec, self.sm.restore, path)
        finally:
            self.reader = Reader(self.db_path)
        self.applied_index = snap.meta.index
        self.metrics.snapshots_installed.inc()
        # Our own proposals below the snapshot may or may not have been committed.
        for idx in [i for i in self._waiting if i <= snap.meta.index]:
            _set_exc(
                self._waiting.pop(idx)[1].future,
                ReplicationTimeout("outcome unknown: state replaced by a snapshot"),
            )
        self._wake_applied_waiters()
        self._notify_applied([], [])
        log.info("installed snapshot at %d (term %d)", snap.meta.index, snap.meta.term)

    async def _checkpoint(self) -> None:
        """Copy SQLite's WAL into the database on the snapshot thread (never on the loop)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._snap_exec, self.sm.checkpoint)
        except Exception:
            log.exception("SQLite checkpoint failed")
        finally:
            self._checkpointing = False

    def _maybe_snapshot(self) -> None:
        if (
            self._snapshotting
            or self._stopping
            or self.applied_index - self._last_snap_index < self._snapshot_due
        ):
            return
        self._snapshotting = True
        self._snapshot_due = _jittered(self.cfg.snapshot_interval)
        task = asyncio.create_task(self._take_snapshot(), name=f"{self.id}-snapshot")
        self._tasks.append(task)

    async def _take_snapshot(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(self._snap_exec, self.snapshots.create, self.db_path)
            if info.index <= self.storage.snapshot().meta.index:
                return
            self.storage.create_snapshot(info.index, info.conf_state, _snapshot_ref(info.path.name))
            keep_from = info.index - CATCH_UP_ENTRIES
            if keep_from > self.storage.first_index():
                self.storage.compact(keep_from)
            await loop.run_in_executor(self._wal_exec, self._compact_wal, info.index, info.term)
            self._last_snap_index = info.index
            self.metrics.snapshots.inc()
            log.info("snapshot at %d (%d bytes)", info.index, info.size)
        except Exception:
            log.exception("snapshot failed")
        finally:
            self._snapshotting = False
            self._tasks = [t for t in self._tasks if not t.done()]

    def _compact_wal(self, index: int, term: int) -> None:
        self.wal.save_snapshot_marker(index, term)
        self.wal.release_to(index)

    def _update_gauges(self) -> None:
        m = self.metrics
        core = self.core
        m.term.set(core.term)
        m.commit_index.set(core.commit_index)
        m.last_index.set(core.log.last_index())
        if core.role == Role.LEADER:
            last = core.log.last_index()
            for p, pr in core.prs.items():
                if p == self.id:
                    continue
                m.lag_entries.labels(peer=p).set(last - pr.match)
                m.lag_seconds.labels(peer=p).set((core.tick_count - pr.last_contact) * self._tick_s)


def _jittered(interval: int) -> int:
    """``interval`` plus up to a quarter more, at random."""
    return interval + random.randint(0, interval // 4)


async def _wait(fut: asyncio.Future[_T], timeout: float) -> _T:
    """``fut``'s result, or TimeoutError after ``timeout`` s; ``fut`` itself is never
    cancelled (like ``wait_for(shield(fut))``, with one future and one timer less)."""
    if not fut.done():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        handle = loop.call_later(timeout, wake)
        fut.add_done_callback(wake)
        try:
            await waiter
        finally:
            handle.cancel()
            fut.remove_done_callback(wake)
        if not fut.done():
            raise TimeoutError
    return fut.result()


def _set_result(f: asyncio.Future[Any], value: Any) -> None:
    if not f.done():
        f.set_result(value)


def _set_exc(f: asyncio.Future[Any], exc: BaseException) -> None:
    if not f.done():
        f.set_exception(exc)
