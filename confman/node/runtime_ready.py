"""The Ready loop: wakes when the core may have work, proposes the queued writes and starts
the queued reads, and executes each Ready's plan from ``confman.raft.ready`` (what must be
durable before which message leaves, snapshot before entries before apply). With it: the
tracking of leader and role changes (`RoleWatch`: metrics, logs, failing reads a deposed
leader cannot confirm), membership changes applied to the core and the transport as they
are handed out (`Membership`), and the gauges refreshed after each Ready."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgpack

from confman.node.config import Member
from confman.node.metrics import NodeMetrics
from confman.node.runtime_apply import ApplyItem
from confman.node.runtime_common import Control
from confman.node.runtime_requests import Proposals, Reads
from confman.node.runtime_snapshots import LIVE_REF, ReceivedSnapshots, Snapshotter
from confman.node.storage.wal import WAL
from confman.node.transport import PeerTransport
from confman.raft.confchange import decode_conf_change
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
from confman.raft.types import ConfState, Entry, EntryType, HardState, Ready, Role, Snapshot

log = logging.getLogger("confman.node")

ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.FOLLOWER: "follower",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",
}


class RoleWatch:
    """Follows the core's soft state: leader changes, elections and step-downs."""

    def __init__(
        self,
        node_id: str,
        core: RawNode,
        metrics: NodeMetrics,
        reads: Reads,
        last_contact_ms: Callable[[], int],
    ) -> None:
        self._id = node_id
        self._core = core
        self._metrics = metrics
        self._reads = reads
        self._last_contact_ms = last_contact_ms
        self._leader: str | None = None
        self._role = core.role
        self._leader_term = 0
        self._led_until: float | None = None  # when this node last stopped leading

    def update(self, leader: str | None, role: Role) -> None:
        m = self._metrics
        if leader != self._leader:
            if leader is not None:
                m.leader_changes.inc()
            log.info(
                "node %s: leader is now %s (term %d)",
                self._id,
                leader or "unknown",
                self._core.term,
            )
            self._leader = leader
        if role == self._role:
            return
        if role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and self._role not in (
            Role.CANDIDATE,
            Role.PRE_CANDIDATE,
        ):
            m.elections.inc()
            heard_ms = 0 if self._role == Role.LEADER else self._last_contact_ms()
            if self._led_until is not None:  # it was the leader itself more recently
                heard_ms = min(heard_ms, int((time.monotonic() - self._led_until) * 1000))
            log.warning(
                "node %s: starting an election in term %d (leader last heard %d ms ago)",
                self._id,
                self._core.term,
                heard_ms,
            )
        if self._role == Role.LEADER:
            self._led_until = time.monotonic()
            log.warning(
                "node %s: stepped down as leader of term %d (now %s in term %d)",
                self._id,
                self._leader_term,
                ROLE_NAMES[role],
                self._core.term,
            )
            self._reads.leadership_lost()
        self._role = role
        if role == Role.LEADER:
            self._leader_term = self._core.term
        for r in ROLE_NAMES.values():
            m.role.labels(role=r).set(0)
        m.role.labels(role=ROLE_NAMES[role]).set(1)


class Membership:
    """Applies membership changes to the core in log order as they are handed out, and
    gives the transport the new peer set (``members`` learns the addresses)."""

    def __init__(
        self, node_id: str, core: RawNode, members: dict[str, Member], transport: PeerTransport
    ) -> None:
        self._id = node_id
        self._core = core
        self._members = members
        self._transport = transport

    def conf_changes(self, entries: list[Entry]) -> dict[int, ConfState]:
        """The membership after each membership change among ``entries``, by index."""
        conf_states: dict[int, ConfState] = {}
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                try:
                    cc = decode_conf_change(e.data)
                except ValueError:
                    log.error("entry %d: undecodable membership change ignored", e.index)
                    conf_states[e.index] = self._core.conf_state()
                    continue
                conf_states[e.index] = self._core.apply_conf_change(cc)
                self._changed(cc.node_id, cc.context)
        return conf_states

    def _changed(self, node_id: str, context: bytes) -> None:
        if context:
            try:
                raft, http = msgpack.unpackb(context)
                host, port = raft
                self._members[node_id] = Member(node_id, (str(host), int(port)), str(http))
            except Exception:
                log.warning("membership change for %s has an unreadable address", node_id)
        core = self._core
        peers = {
            i: m.raft
            for i, m in self._members.items()
            if i != self._id and (i in core.voters or i in core.learners)
        }
        self._transport.update_peers(peers)


class ReadyLoop:
    """Executes the core's Readies, one at a time, in the order ``plan_ready`` gives."""

    def __init__(
        self,
        node_id: str,
        *,
        core: RawNode,
        storage: MemoryStorage,
        wal: WAL,
        wal_exec: ThreadPoolExecutor,
        transport: PeerTransport,
        metrics: NodeMetrics,
        ctl: Control,
        proposals: Proposals,
        reads: Reads,
        received: ReceivedSnapshots,
        snapshotter: Snapshotter,
        apply_queue: asyncio.Queue[ApplyItem],
        roles: RoleWatch,
        membership: Membership,
        persisted_vote: tuple[int, str | None],
        tick_s: float,
    ) -> None:
        self._id = node_id
        self._core = core
        self._storage = storage
        self._wal = wal
        self._wal_exec = wal_exec
        self._transport = transport
        self._metrics = metrics
        self._ctl = ctl
        self._proposals = proposals
        self._reads = reads
        self._received = received
        self._snapshotter = snapshotter
        self._apply_q = apply_queue
        self._roles = roles
        self._membership = membership
        #: (term, vote) of the latest hard state on disk.
        self._persisted_vote = persisted_vote
        self._tick_s = tick_s

    async def run(self, die: Callable[[], None]) -> None:
        """Until stopped; ``die`` on an unexpected error."""
        ctl = self._ctl
        try:
            while not ctl.stopping:
                await ctl.wake_event.wait()
                ctl.wake_event.clear()
                while not ctl.stopping:
                    if self._proposals.has_pending():
                        self._proposals.flush()
                    if self._reads.has_queued():
                        self._reads.flush()
                    if not self._core.has_ready():
                        break
                    await self.handle(self._core.ready())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.critical(
                "node %s: fatal error in the Ready loop; stopping", self._id, exc_info=True
            )
            die()

    async def write_log(self, hard_state: HardState, entries: list[Entry], sync: bool) -> None:
        """Append ``entries`` and ``hard_state`` to the WAL on its thread (fsync if ``sync``)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wal_exec, self._wal.save, hard_state, entries, sync)

    async def handle(self, rd: Ready) -> None:
        """Execute the Ready's plan (``confman.raft.ready``: what is durable before what)."""
        loop = asyncio.get_running_loop()
        core = self._core
        if rd.soft_state is not None:  # before planning: the plan asks whether we lead
            self._roles.update(rd.soft_state.leader, rd.soft_state.role)
        steps = plan_ready(
            rd,
            leader=core.role == Role.LEADER,
            durable=self._persisted_vote,
            latest=self._storage.hard_state,
        )
        snap: Snapshot | None = None
        for step in steps:
            match step:
                case KeepHardState(hard_state=hs):
                    self._storage.set_hard_state(hs)
                case Send(messages=msgs):
                    self._transport.send(msgs)
                case SaveSnapshot(snapshot=received):
                    snap = await self._received.settle(received)
                    meta = snap.meta
                    await loop.run_in_executor(
                        self._wal_exec, self._wal.save_snapshot_marker, meta.index, meta.term
                    )
                    # The log's base is the live database from now on: the file is
                    # installed (and gone) before any entry after it is applied.
                    self._storage.apply_snapshot(Snapshot(meta, LIVE_REF))
                    self._snapshotter.last_index = meta.index
                case HandOutSnapshot():
                    assert snap is not None
                    await self._apply_q.put(snap)
                case WriteLog(entries=ents, hard_state=hs, sync=sync):
                    t0 = time.perf_counter()
                    await self.write_log(hs, ents, sync)
                    self._metrics.fsync_latency.observe(time.perf_counter() - t0)
                    self._persisted_vote = (hs.term, hs.vote)
                    if ents:
                        self._storage.append(ents)
                case HandOutEntries(entries=ents):
                    await self._apply_q.put((ents, self._membership.conf_changes(ents)))
                case ServeReads(read_states=states):
                    self._reads.serve(states)
                case Advance():
                    core.advance(rd)
        self._update_gauges()

    def _update_gauges(self) -> None:
        m = self._metrics
        core = self._core
        m.term.set(core.term)
        m.commit_index.set(core.commit_index)
        m.last_index.set(core.log.last_index())
        if core.role == Role.LEADER:
            last = core.log.last_index()
            for p, pr in core.prs.items():
                if p == self._id:
                    continue
                m.lag_entries.labels(peer=p).set(last - pr.match)
                m.lag_seconds.labels(peer=p).set((core.tick_count - pr.last_contact) * self._tick_s)
