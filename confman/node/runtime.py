"""The asyncio runtime of one member: drives the Raft core, owns clock, transport, WAL and
state machine; proposals in, applied results out.

``Runtime`` is the public class: its lifecycle (``start``/``stop``), what it observes (role,
leader, contact, status) and the request API (``propose``, ``read_index``,
``lease_read_index``, ``wait_applied``). It wires the parts that do the work:

- ``runtime_recovery``: the stores and the core recovered at start;
- ``runtime_clock``: the ticks;
- ``runtime_requests``: proposals, ReadIndex reads and waits for an applied index;
- ``runtime_ready``: the Ready loop, role tracking and membership changes;
- ``runtime_apply``: the apply worker, the applied index and the reader;
- ``runtime_snapshots``: receiving, taking and compacting snapshots;
- ``runtime_common``: the wake-up and stopping flag they share, future helpers.

Threads: the event loop owns the core and applies committed entries in slices (SQLite
there never waits for the disk: synchronous=NORMAL, checkpoints elsewhere); the WAL is
written on one worker thread, snapshots and checkpoints taken on another, and recovery and
snapshot installs run on a third, so no fsync ever delays a tick, a heartbeat or a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confman.node.config import Member, NodeConfig
from confman.node.errors import NodeStopped, NoLeader, NotLeader
from confman.node.loop_watch import LoopWatch
from confman.node.metrics import NodeMetrics
from confman.node.peer_tls import load_contexts
from confman.node.runtime_apply import AppliedState, Applier, OnApplied
from confman.node.runtime_clock import Clock
from confman.node.runtime_common import Control
from confman.node.runtime_ready import ROLE_NAMES, Membership, ReadyLoop, RoleWatch
from confman.node.runtime_recovery import Recovered, recover
from confman.node.runtime_requests import AppliedWaiters, Proposals, Reads
from confman.node.runtime_snapshots import (
    DurableSettings,
    ReceivedSnapshots,
    Snapshotter,
    open_source,
)
from confman.node.state.commands import Request, encode_request
from confman.node.state.durability import Durability
from confman.node.state.machine import ApplyResult, StateMachine
from confman.node.state.queries import Reader
from confman.node.storage.snapshots import SnapshotStore
from confman.node.storage.wal import WAL
from confman.node.transport import PeerTransport
from confman.raft.node import RawNode
from confman.raft.storage import MemoryStorage
from confman.raft.types import Message, Role

__all__ = ["ROLE_NAMES", "Runtime"]

log = logging.getLogger("confman.node")


class Runtime:
    """One Confman node. ``await start()``, then use the proposal/read API, ``await stop()``."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.metrics = NodeMetrics(cfg.node_id)
        self.data_dir = Path(cfg.data_dir)
        self.db_path = self.data_dir / "state.db"
        self.members: dict[str, Member] = {m.id: m for m in cfg.members}
        self._tick_s = cfg.tick_ms / 1000
        self._wal_exec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-wal")
        self._apply_exec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-apply")
        self._snap_exec = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-snap")
        self._ctl = Control()
        self._applied = AppliedState()
        #: Callers of ``wait_applied`` (tests/api count them).
        self._applied_waiters = AppliedWaiters()
        self._started = False
        self.core: RawNode
        self.storage: MemoryStorage
        self.wal: WAL
        self.sm: StateMachine
        self.snapshots: SnapshotStore
        self.transport: PeerTransport
        self._proposals: Proposals
        self._reads: Reads
        self._received: ReceivedSnapshots
        self._snapshotter: Snapshotter
        self._clock: Clock
        self._applier: Applier
        #: What to do when the node cannot continue safely (tests replace it).
        self.fatal: Callable[[int], None] = os._exit
        #: Called on the loop after every applied batch with (entries, results), and with
        #: two empty lists after a snapshot replaced the state.
        self.on_applied: list[OnApplied] = []

    # ------------------------------------------------------------------ applied state
    @property
    def applied_index(self) -> int:
        """The index of the last entry applied here."""
        return self._applied.index

    @applied_index.setter
    def applied_index(self, value: int) -> None:
        self._applied.index = value

    @property
    def reader(self) -> Reader | None:
        """Reads the applied state (loop thread only); None while a snapshot is installed."""
        return self._applied.reader

    @reader.setter
    def reader(self, value: Reader | None) -> None:
        self._applied.reader = value

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Recover state from disk, then start the transport, clock and Ready loop."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        rec = await loop.run_in_executor(
            self._apply_exec, recover, self.cfg, self.members, self.data_dir
        )
        self._adopt(rec)
        self.reader = Reader(self.db_path)  # used on the loop thread only
        peers = {m.id: m.raft for m in self.members.values() if m.id != self.id}
        # Membership reaches the transport as its peer set: here, then from every applied
        # membership change (Membership -> update_peers); only those peers are admitted.
        tls = load_contexts(self.cfg.raft_tls) if self.cfg.raft_tls is not None else None
        refused = self.metrics.peer_refused
        store, db_path = self.snapshots, self.db_path
        self.transport = PeerTransport(
            self.id,
            self.cfg.cluster_secret,
            self.cfg.raft_listen,
            peers,
            on_message=self._on_message,
            on_unreachable=self._on_unreachable,
            snapshot_source=lambda m: open_source(store, db_path, m),
            open_snapshot_sink=lambda m, size: self._received.sink(m),
            on_snapshot_status=self._on_snapshot_status,
            tls=tls,
            on_refused=lambda reason: refused.labels(reason=reason).inc(),
            snapshot_rate_bytes_s=self.cfg.snapshot_rate_bytes_s,
        )
        await self.transport.start()
        watch = LoopWatch(
            self.id, self._tick_s, self.cfg.election_timeout_ms[0] / 2000, self.metrics.loop_lag
        )
        self._clock = Clock(self.core, self._tick_s, self._after_input, watch)
        ready = self._ready_loop(rec)
        self._ctl.spawn(ready.run(self._die), f"{self.id}-ready")
        self._ctl.spawn(self._clock.run(self._ctl), f"{self.id}-tick")
        self._ctl.spawn(self._applier.run(self.id, self._die), f"{self.id}-apply")
        self._ctl.spawn(self._snapshotter.run(), f"{self.id}-durable-timer")
        log.info(
            "node %s started: term %d, commit %d, applied %d, members %s",
            self.id,
            self.core.term,
            self.core.commit_index,
            self.applied_index,
            ",".join(self.core.voters),
        )

    def _adopt(self, rec: Recovered) -> None:
        """Take the recovered stores and core; build the parts that need them."""
        self._started = True
        self.snapshots = rec.snapshots
        self.sm = rec.sm
        self.wal = rec.wal
        self.storage = rec.storage
        self.core = rec.core
        self.applied_index = rec.sm.applied_index
        self._proposals = Proposals(self.core, self.metrics, self._ctl, self._not_leader)
        self._reads = Reads(self.id, self.core, self._ctl)
        self._received = ReceivedSnapshots(self.snapshots, self._snap_exec)
        cfg = self.cfg
        settings = DurableSettings(
            cfg.durable_every_entries,
            cfg.durable_every_ms,
            cfg.sqlite_wal_limit_bytes,
            cfg.sqlite_park_max_ms,
            cfg.vacuum_threshold_bytes,
        )
        self._snapshotter = Snapshotter(
            self.id,
            settings,
            sm=self.sm,
            storage=self.storage,
            wal=self.wal,
            durability=Durability(self.db_path),
            snap_exec=self._snap_exec,
            wal_exec=self._wal_exec,
            metrics=self.metrics,
            ctl=self._ctl,
            last_index=rec.last_snap_index,
        )
        self._applier = Applier(
            self._applied,
            sm=self.sm,
            db_path=self.db_path,
            snapshots_dir=self.snapshots.dir,
            apply_exec=self._apply_exec,
            snap_exec=self._snap_exec,
            metrics=self.metrics,
            proposals=self._proposals,
            waiters=self._applied_waiters,
            snapshotter=self._snapshotter,
            on_applied=self.on_applied,
        )

    def _ready_loop(self, rec: Recovered) -> ReadyLoop:
        roles = RoleWatch(self.id, self.core, self.metrics, self._reads, self.last_contact_ms)
        return ReadyLoop(
            self.id,
            core=self.core,
            storage=self.storage,
            wal=self.wal,
            wal_exec=self._wal_exec,
            transport=self.transport,
            metrics=self.metrics,
            ctl=self._ctl,
            proposals=self._proposals,
            reads=self._reads,
            received=self._received,
            snapshotter=self._snapshotter,
            apply_queue=self._applier.queue,
            roles=roles,
            membership=Membership(self.id, self.core, self.members, self.transport),
            persisted_vote=rec.persisted_vote,
            tick_s=self._tick_s,
        )

    async def stop(self) -> None:
        """Stop the loop, transport and threads; pending callers get ``NodeStopped``."""
        ctl = self._ctl
        if ctl.stopping:
            return
        ctl.stopping = True
        ctl.wake()
        tasks = list(ctl.tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if hasattr(self, "transport"):
            await self.transport.stop()
        self._fail_all(NodeStopped("node is stopping"))
        if self._started:
            self._received.abort_all()
            self._applier.close_reader()
        loop = asyncio.get_running_loop()
        if self._started:  # on its thread: after a round still running there
            await loop.run_in_executor(self._snap_exec, self._snapshotter.durability.close)
        await loop.run_in_executor(self._apply_exec, self._close_stores)
        if hasattr(self, "wal"):
            await loop.run_in_executor(self._wal_exec, self.wal.close)
        for ex in (self._wal_exec, self._apply_exec, self._snap_exec):
            ex.shutdown(wait=True)

    def _close_stores(self) -> None:
        try:
            if hasattr(self, "sm"):  # not when recovery failed
                self.sm.close()
        except Exception:  # pragma: no cover - best effort on shutdown
            log.exception("error while closing the state machine")

    def _fail_all(self, exc: Exception) -> None:
        if self._started:
            self._proposals.fail_all(exc)
            self._reads.fail_all(exc)
        self._applied_waiters.fail_all(exc)

    def _die(self) -> None:
        """The node cannot continue safely: fail every caller and exit."""
        self._fail_all(NodeStopped("node failed"))
        self.fatal(70)

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
        return self.core.ticks_since_contact() + max(0, self._clock.pending_ticks())

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
        if self._ctl.stopping:
            raise NodeStopped("node is stopping")
        if self.core.role != Role.LEADER:
            raise self._not_leader()
        t = self.cfg.replication_timeout_ms / 1000 if timeout is None else timeout
        return await self._proposals.submit(data, t)

    def _not_leader(self) -> Exception:
        """The error for a request only a leader can take, on a node that does not lead."""
        if self.core.leader is None:
            return NoLeader("no leader is known")
        return NotLeader(self.core.leader, self.leader_url)

    # ------------------------------------------------------------------ reads
    async def read_index(self, timeout: float = 5.0) -> int:
        """Linearizable read barrier: returns an index applied here that reflects every
        write acknowledged before the call (ReadIndex; works on followers)."""
        if self._ctl.stopping:
            raise NodeStopped("node is stopping")
        if self.core.leader is None:
            raise NoLeader("no leader is known")
        deadline = time.monotonic() + timeout
        index = await self._reads.barrier(timeout)
        await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
        return index

    def lease_read_index(self) -> int | None:
        """Commit index a leader may serve under its lease, or None (not leader/no lease)."""
        self._clock.advance()
        return self.core.lease_read_index()

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Wait until this node has applied ``index``; ReadTimeout otherwise."""
        if self.applied_index >= index:
            return
        await self._applied_waiters.wait(index, timeout)

    # ------------------------------------------------------------------ input
    def _after_input(self) -> None:
        """Send heartbeats and their responses now, even while the Ready loop waits for an
        fsync (a slow disk must not look like a dead leader or a lost quorum); then wake
        the Ready loop for the rest."""
        if msgs := self.core.take_heartbeats():
            self.transport.send(msgs)
        self._ctl.wake()

    def _on_message(self, m: Message) -> None:
        if self._ctl.stopping:
            return
        self.core.step(m)
        self._after_input()

    def _on_unreachable(self, peer: str) -> None:
        self.core.report_unreachable(peer)
        self._ctl.wake()

    def _on_snapshot_status(self, peer: str, ok: bool) -> None:
        self.core.report_snapshot(peer, ok)
        self._ctl.wake()
