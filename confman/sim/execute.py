"""The simulator's side of a member's runtime: its Ready handling, state machine and sends.

``ReadyHandling`` is the part of ``Cluster`` (module ``cluster``) that plays each member's
runtime: after every event it judges the core (``Checker``), plans the core's Ready with the
run's planner (``confman.raft.ready.plan_ready`` unless a test swaps in a broken one) and
executes the plan's steps on the member's disk (``MemoryStorage``), the network and the
state machine, as ``confman.node.runtime`` does on its WAL, transport and SQLite. A leader's
disk write may land some ticks later (``Profile.send_first``): the steps before the write
happen now, the rest when it lands.
"""

from __future__ import annotations

import random

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
    Step,
    WriteLog,
)
from confman.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    Message,
    MessageType,
    NodeId,
    Ready,
    Role,
    Snapshot,
)
from confman.sim.checks import Checker, Violation, chain_digest
from confman.sim.model import SM_SNAPSHOT, Handout, RunStats, SimNode, Variant, describe
from confman.sim.network import Network
from confman.sim.scenarios import Profile

MT = MessageType
LEADER = Role.LEADER
_WRITES = (SaveSnapshot, WriteLog)  # the plan's steps that write to disk


class ReadyHandling:
    """Members' Ready handling, sends and state machines (a base of ``Cluster``)."""

    p: Profile
    rng: random.Random
    net: Network
    checker: Checker
    stats: RunStats
    events: list[tuple[int, str]]
    now: int
    nodes: dict[NodeId, SimNode]
    variant: Variant
    verbose: bool
    calm: bool
    apply_lag: int
    early_heartbeats: bool
    leader_hint: NodeId | None
    reports: list[tuple[NodeId, NodeId, bool | None]]  # (from, peer, snapshot ok)

    def ev(self, text: str) -> None:
        """Record an event of the trace at the current tick."""
        self.events.append((self.now, text))

    def _crash(self, sn: SimNode, why: str, down: tuple[int, int] | None = None) -> None:
        raise NotImplementedError  # Cluster's

    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for sn in self.nodes.values():
            raw = sn.raw
            if (
                raw is not None
                and raw.role == Role.LEADER
                and (best is None or best.raw is None or raw.term > best.raw.term)
            ):
                best = sn
        return best

    def _believer(self) -> SimNode | None:
        """A reachable node that believes it leads (clients may reach a deposed leader)."""
        leaders = [sn for sn in self._live() if sn.raw is not None and sn.raw.role is LEADER]
        return self.rng.choice(leaders) if leaders else None

    def _live(self) -> list[SimNode]:
        """Nodes a client can reach (running, not frozen)."""
        return [sn for sn in self.nodes.values() if sn.reachable]

    # ------------------------------------------------------------------ ready handling
    def after(self, sn: SimNode) -> None:
        """Judge ``sn`` after an event, then handle its Ready until it has none."""
        chk = self.checker
        while True:
            raw = sn.raw
            if raw is None:
                return
            fresh = False
            leading = raw.role is LEADER
            if leading and raw.term != sn.led and chk.leader(sn.id, raw.term):
                sn.led = raw.term
                fresh = True
                self.ev(f"{sn.id} leader of term {raw.term} (last {raw.log.last_index()})")
                chk.leader_completeness(sn.id, raw.term, raw.log)
                self.leader_hint = sn.id
                kill = self.p.kill_new_leader
                if kill and not self.calm and self.rng.random() < kill:
                    sn.crash_at = self.now + self.rng.randint(*self.p.kill_delay)
            if raw.commit_index != sn.commit:
                chk.commit(sn.id, raw.commit_index, raw.term, raw.log, leading)
                sn.commit = raw.commit_index
            if self.early_heartbeats:
                self._send_early(sn, raw.take_heartbeats())
            if sn.pending is not None or not raw.has_ready():
                return
            rd = raw.ready()
            disk = sn.storage.hard_state
            steps = self.variant.plan(
                rd, leader=raw.role is LEADER, durable=(disk.term, disk.vote), latest=sn.hard
            )
            p = self.p
            if fresh and p.unsent_leader and not self.calm and self.rng.random() < p.unsent_leader:
                self._execute(sn, rd, tuple(s for s in steps if isinstance(s, _WRITES)))
                self._crash(sn, "new leader, after its disk write, before sending", p.down_len)
                return
            cut = next((i for i, s in enumerate(steps) if isinstance(s, _WRITES)), len(steps))
            if (
                raw.role is LEADER
                and cut < len(steps)
                and p.send_first
                and not self.calm
                and self.rng.random() < p.send_first
            ):
                # The disk write takes a while: what may precede it happens now, the rest
                # once it lands (``_land_write``), unless the leader crashes first.
                self._execute(sn, rd, steps[:cut])
                sn.pending = (rd, steps[cut:], self.now + self.rng.randint(*p.persist_delay))
                return
            if self._execute(sn, rd, steps):
                return  # crashed right after voting

    def _land_write(self, sn: SimNode) -> None:
        """A leader's delayed disk write completes (or the leader crashes first)."""
        assert sn.pending is not None
        rd, rest, _ = sn.pending
        p = self.p
        if p.crash_in_window and not self.calm and self.rng.random() < p.crash_in_window:
            self._crash(sn, "before its disk write landed", p.down_len)
            return
        sn.pending = None
        if not self._execute(sn, rd, rest):
            self.after(sn)

    def _execute(self, sn: SimNode, rd: Ready, steps: tuple[Step, ...]) -> bool:
        """Run a Ready's plan (``confman.raft.ready``); True if the node crashed meanwhile.

        The disk is ``sn.storage`` (the core reads it too): what a step writes there is
        durable at once. Handed-out snapshots and entries reach the state machine after
        ``Advance``, at once or later from its queue (asynchronous apply).
        """
        raw = sn.raw
        assert raw is not None
        st = sn.storage
        chk = self.checker
        items: list[Handout] = []
        for step in steps:
            if isinstance(step, KeepHardState):
                sn.hard = step.hard_state
            elif isinstance(step, Send):
                if self._send(sn, step.messages):
                    return True
            elif isinstance(step, SaveSnapshot):
                st.apply_snapshot(step.snapshot)
            elif isinstance(step, WriteLog):
                if step.entries:
                    floor = max(st.hard_state.commit, sn.applied)
                    chk.before_append(sn.id, st, step.entries, floor)
                    st.append(step.entries)
                    chk.logged(sn.id, st, step.entries)
                chk.hard_state(sn.id, step.hard_state)
                st.set_hard_state(step.hard_state)
            elif isinstance(step, HandOutSnapshot):
                meta = step.snapshot.meta
                if meta.index <= sn.handed:
                    raise Violation(
                        "apply-order",
                        f"snapshot at {meta.index} after entries up to {sn.handed} were handed out",
                        (sn.id,),
                        meta.term,
                        meta.index,
                    )
                sn.handed = meta.index
                items.append(step.snapshot)
            elif isinstance(step, HandOutEntries):
                # Membership changes reach the core as they are handed out.
                ents = step.entries
                confs = {
                    e.index: self._apply_conf(sn, raw, decode_conf_change(e.data), e.index)
                    for e in ents
                    if e.type == EntryType.CONF_CHANGE
                }
                sn.handed = ents[-1].index
                items.append((ents, confs))
            elif isinstance(step, ServeReads):
                for rs in step.read_states:
                    if rs.context in sn.reads:
                        floor = sn.reads.pop(rs.context)
                        chk.read_result(sn.id, "ReadIndex", rs.index, floor, raw.term)
                        self.stats.reads_checked += 1
            elif isinstance(step, Advance):
                raw.advance(rd)
                self._hand_over(sn, items)
                items = []
        self._hand_over(sn, items)
        return False

    def _hand_over(self, sn: SimNode, items: list[Handout]) -> None:
        """The state machine applies ``items`` now, or queues them (asynchronous apply)."""
        if not items:
            return
        if self.apply_lag:
            due = self.now + self.rng.randint(0, self.apply_lag)
            if sn.apply_q:
                due = max(due, sn.apply_q[-1][0])
            sn.apply_q.extend((due, it) for it in items)
            return
        for it in items:
            self._apply(sn, it)
        self._maybe_compact(sn)

    def _send(self, sn: SimNode, msgs: list[Message]) -> bool:
        """Send ``msgs``; True if the node crashed right after sending a vote."""
        net = self.net
        now = self.now
        voted = False
        for m in msgs:
            if m.type == MT.VOTE_RESP and not m.reject:
                self.checker.vote_sent(sn.id, m.term, m.to, sn.storage.hard_state)
                voted = True
            elif m.type == MT.SNAPSHOT:
                self.stats.snapshots_sent += 1
            if self.verbose:
                self.ev(describe(m))
            if not net.send(m, now):
                self._lost(m)
        p = self.p
        crash = p.crash_after_vote
        if voted and crash and not self.calm and self.rng.random() < crash:
            self._crash(sn, "right after voting", (1, 3))
            return True
        return False

    def _send_early(self, sn: SimNode, msgs: list[Message]) -> None:
        """Send heartbeats outside a Ready; each must carry a term already on disk."""
        durable = sn.storage.hard_state.term
        for m in msgs:
            if m.term > durable:
                raise Violation(
                    "term-durability",
                    f"{sn.id} sent {describe(m)} in term {m.term}, its disk has term {durable}",
                    (sn.id,),
                    m.term,
                    0,
                )
        self._send(sn, msgs)

    def _drain_applies(self, sn: SimNode) -> None:
        """The state machine applies the handed-out batches that are due."""
        q = sn.apply_q
        while q and q[0][0] <= self.now:
            self._apply(sn, q.popleft()[1])
        self._maybe_compact(sn)

    def _apply(self, sn: SimNode, item: Handout) -> None:
        """Apply a snapshot or a batch of entries to ``sn``'s state machine."""
        chk = self.checker
        nid = sn.id
        if isinstance(item, Snapshot):
            meta = item.meta
            index, digest = SM_SNAPSHOT.unpack(item.data)
            if index != meta.index:
                raise Violation(
                    "snapshot-integrity",
                    f"snapshot meta says {meta.index}, data holds {index}",
                    (nid,),
                    meta.term,
                    meta.index,
                )
            if meta.index <= sn.applied:
                raise Violation(
                    "apply-order",
                    f"snapshot at {meta.index} but already applied {sn.applied}",
                    (nid,),
                    meta.term,
                    meta.index,
                )
            chk.restored(nid, meta.index, meta.term, digest)
            sn.applied, sn.digest, sn.conf = meta.index, digest, meta.conf_state
            self.ev(f"{nid} installed snapshot at {meta.index} term {meta.term}")
            return
        entries, confs = item
        for e in entries:
            digest = chain_digest(sn.digest, e)
            chk.applied(nid, e, sn.applied, digest)
            sn.applied, sn.digest = e.index, digest
            if confs:
                sn.conf = confs.get(e.index, sn.conf)

    def _maybe_compact(self, sn: SimNode) -> None:
        """Snapshot the state machine and compact the log every ``snapshot_every`` entries."""
        every = self.p.snapshot_every
        st = sn.storage
        if (
            every
            and sn.applied - st.snapshot().meta.index >= every
            and sn.applied <= st.last_index()
        ):
            st.create_snapshot(sn.applied, sn.conf, SM_SNAPSHOT.pack(sn.applied, sn.digest))
            upto = sn.applied - self.p.snapshot_keep
            if upto >= st.first_index():
                st.compact(upto)

    def _apply_conf(self, sn: SimNode, raw: RawNode, cc: ConfChange, index: int) -> ConfState:
        conf = raw.apply_conf_change(cc)
        if raw.role == Role.LEADER:
            self.stats.conf_changes += 1
            self.ev(
                f"{sn.id} applied conf change {cc.type.name} {cc.node_id} at {index}: "
                f"voters {','.join(conf.voters)} learners {','.join(conf.learners) or '-'}"
            )
            if cc.type == ConfChangeType.REMOVE:
                gone = self.nodes.get(cc.node_id)
                if gone is not None and gone.retire_at < 0:
                    gone.retire_at = self.now + self.rng.randint(1, 30)
        return conf

    # ------------------------------------------------------------------ network
    def _deliver(self) -> None:
        net = self.net
        now = self.now
        nodes = self.nodes
        while True:
            m = net.next_due(now)
            if m is None:
                return
            sn = nodes.get(m.to)
            if sn is None or sn.raw is None:
                self._lost(m)
                continue
            if sn.paused_since >= 0:
                sn.inbox.append(m)
                continue
            sn.raw.step(m)
            if m.type == MT.SNAPSHOT:
                self.reports.append((m.frm, m.to, True))
            self.after(sn)

    def _lost(self, m: Message) -> None:
        """The transport of ``m.frm`` notices a failed send (snapshot or blocked link)."""
        if m.type == MT.SNAPSHOT:
            self.reports.append((m.frm, m.to, False))
        elif self.net.is_blocked(m.frm, m.to) and self.rng.random() < 0.2:
            self.reports.append((m.frm, m.to, None))

    def _deliver_reports(self) -> None:
        reports, self.reports = self.reports, []
        for frm, peer, ok in reports:
            sn = self.nodes.get(frm)
            if sn is None or sn.raw is None:
                continue
            if sn.paused_since >= 0:
                self.reports.append((frm, peer, ok))
                continue
            if ok is None:
                sn.raw.report_unreachable(peer)
            else:
                sn.raw.report_snapshot(peer, ok)
            self.after(sn)
