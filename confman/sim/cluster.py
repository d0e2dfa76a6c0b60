"""One deterministic simulated cluster run: nodes, disks, clients, faults, virtual clock.

``Cluster(seed, profile).run()`` drives ``RawNode`` cores over a seeded ``Network`` and
returns a ``RunResult``. Each virtual tick runs, in order: due disk writes, transport
reports, faults, client actions, message deliveries, then one ``tick()`` per live node.
Every node's ``Ready`` is handled right after the event that produced it, by executing the
plan of ``confman.raft.ready`` (the runtime's own rules), and every fact it carries is judged
by ``Checker``. A seed fixes every choice, so a failing run replays
exactly (``python -m confman.sim --seed N --trace``).

The seed also flips coins that choose how each node's runtime behaves (the trace's first
event names them): membership bootstrapped through the log (as the runtime does) or the
storage's ConfState; a state machine kept across crashes (restart at its applied index) or
rebuilt from the snapshot; synchronous or asynchronous apply (``advance`` first, the state
machine up to 3 ticks later); heartbeats sent ahead of the Ready or in it.

What runs is a ``Variant``: the core and the Ready planner, ``RawNode`` and ``plan_ready``
unless a test swaps in a deliberately broken one (``tests/raft/broken.py``).

The run has two phases. During ``profile.fault_ticks`` the profile's faults happen; then
faults stop and ``Liveness`` (module ``liveness``) requires the cluster to elect, commit and
converge within bounds derived from the election timeout.
"""

from __future__ import annotations

import random
import traceback

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
    Step,
    WriteLog,
)
from confman.raft.storage import MemoryStorage
from confman.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    Ready,
    Role,
    Snapshot,
)
from confman.sim.checks import Checker, Violation, chain_digest
from confman.sim.liveness import LEADER_BOUND_TIMEOUTS, Liveness
from confman.sim.model import (
    CORRECT,
    SM_SNAPSHOT,
    Handout,
    RunResult,
    RunStats,
    SimNode,
    Variant,
    describe,
)
from confman.sim.network import NetFaults, Network
from confman.sim.scenarios import Profile

MT = MessageType
LEADER = Role.LEADER
SPARES = 2  # nodes outside the initial configuration, for membership changes
_WRITES = (SaveSnapshot, WriteLog)  # the plan's steps that write to disk


class Cluster:
    """A simulated cluster of ``profile.nodes`` members plus spares (see module doc)."""

    def __init__(
        self,
        seed: int,
        profile: Profile,
        variant: Variant = CORRECT,
        verbose: bool = False,
        commit_rule: bool = True,
    ) -> None:
        self.seed = seed
        self.p = profile
        self.variant = variant
        self.verbose = verbose
        self.rng = random.Random(seed)
        self.net = Network(random.Random(self.rng.getrandbits(64)), profile.net)
        self.checker = Checker(commit_rule)
        self.stats = RunStats()
        self.events: list[tuple[int, str]] = []
        self.now = 0
        n = profile.nodes
        self.initial = tuple(f"n{i}" for i in range(1, n + 1))
        self.universe = tuple(f"n{i}" for i in range(1, n + SPARES + 1))
        self.bootstrap = ConfState(voters=self.initial)
        # Runtime behaviours, fair coins of their own (independent of the profile rotation,
        # which also depends on the seed). Bit 8 once chose whether commit-only hard states
        # were written; the Ready plan decides that now (``confman.raft.ready``).
        modes = random.Random(f"runtime-modes-{seed}").getrandbits(4)
        #: Bootstrap as the runtime does (membership as the first log entries,
        #: ``bootstrap_entries``), else through the storage's ConfState.
        self.log_bootstrap = modes & 1 == 1
        #: Keep the state machine across crashes, as the runtime's SQLite does (restart at
        #: its applied index); else rebuild it from the snapshot, replaying the log.
        self.durable_apply = modes & 2 == 2
        #: Apply asynchronously, as the runtime's apply worker does: ``advance`` first, the
        #: state machine up to ``apply_lag`` ticks later.
        self.apply_lag = 3 if modes & 4 else 0
        #: Send heartbeats and their responses as soon as they exist, even while a Ready
        #: is being persisted, as the runtime does (``RawNode.take_heartbeats``).
        self.early_heartbeats = random.Random(f"early-heartbeats-{seed}").random() < 0.5
        self.ev(
            "runtime: "
            + ", ".join(
                [
                    "log bootstrap" if self.log_bootstrap else "ConfState bootstrap",
                    "durable state machine" if self.durable_apply else "volatile state machine",
                    "async apply" if self.apply_lag else "sync apply",
                    "early heartbeats" if self.early_heartbeats else "heartbeats in Ready",
                ]
            )
        )
        self.nodes: dict[NodeId, SimNode] = {}
        self.min_voters = max(2, n - 1)
        self.election_min, self.election_max = profile.election
        self.leader_bound = LEADER_BOUND_TIMEOUTS * self.election_max
        self.heal_at = -1
        self.leader_hint: NodeId | None = None
        self.payload_seq = 0
        self.reports: list[tuple[NodeId, NodeId, bool | None]] = []  # (from, peer, snap ok)
        self.calm = False
        self.liveness: Liveness | None = None
        for nid in self.initial:
            self._start(nid, self._disk(founder=True))

    # ------------------------------------------------------------------ running
    def run(self, max_ticks: int | None = None) -> RunResult:
        """Run both phases; stop at the first violation or once liveness is shown."""
        p = self.p
        end = max_ticks if max_ticks is not None else p.fault_ticks + 3 * self.leader_bound
        violation: Violation | None = None
        try:
            for now in range(end):
                self.now = now
                if now == p.fault_ticks:
                    self._become_calm()
                if self._step_tick():
                    break
            else:
                if max_ticks is None:
                    raise Violation("liveness", f"run did not settle within {end} ticks")
        except Violation as v:
            violation = v
        except Exception as exc:
            violation = _core_exception(exc)
            if violation is None:
                raise
        if violation is not None:
            self.ev(f"VIOLATION {violation}")
        st = self.stats
        st.ticks = self.now + 1
        st.messages = self.net.stats.sent
        st.delivered = self.net.stats.delivered
        st.elections = len(self.checker.leaders)
        st.committed = self.checker.max_commit
        return RunResult(self.seed, p.name, self.variant.bugs, violation, self.events, st)

    def _step_tick(self) -> bool:
        """One virtual tick; True when the run is finished."""
        now = self.now
        for sn in self.nodes.values():
            if sn.paused_since >= 0:
                if sn.paused_until > now:
                    if sn.queued_lease_at == now:
                        sn.queued_lease = self.checker.read_floor()
                    continue
                self._resume(sn)
            if sn.apply_q and sn.apply_q[0][0] <= now:
                self._drain_applies(sn)
            if sn.pending is not None and sn.pending[2] <= now:
                self._land_write(sn)
            if sn.restart_at == now:
                self._restart(sn)
            if sn.retire_at == now:
                self._maybe_retire(sn)
            if sn.crash_at == now:
                sn.crash_at = -1
                if sn.up and not self.calm:
                    self._crash(sn, "new leader killed", self.p.down_len)
        if self.reports:
            self._deliver_reports()
        if self.liveness is not None:
            if self.liveness.step(self):
                return True
        else:
            self._faults()
            self._clients()
        self._deliver()
        for sn in list(self.nodes.values()):
            raw = sn.raw
            if raw is not None and sn.paused_since < 0:
                if sn.rate == 1.0:
                    raw.tick()
                    self.after(sn)
                    continue
                sn.phase += sn.rate
                while sn.phase >= 1.0 and sn.raw is not None:
                    sn.phase -= 1.0
                    sn.raw.tick()
                    self.after(sn)
        return False

    def ev(self, text: str) -> None:
        """Record an event of the trace at the current tick."""
        self.events.append((self.now, text))

    # ------------------------------------------------------------------ node lifecycle
    def _config(self, nid: NodeId, applied: int) -> Config:
        p = self.p
        return Config(
            id=nid,
            election_tick_min=self.election_min,
            election_tick_max=self.election_max,
            heartbeat_tick=p.heartbeat,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
            max_size_per_msg=p.max_msg_bytes,
            max_inflight_msgs=p.max_inflight,
            applied=applied,
            rng=random.Random(self.rng.getrandbits(64)),
        )

    def _disk(self, founder: bool) -> MemoryStorage:
        """A new member's disk: founders hold the bootstrap, joiners learn it from the log."""
        if not self.log_bootstrap:
            return MemoryStorage(self.bootstrap)
        st = MemoryStorage()
        if founder:
            ents, hs = bootstrap_entries(self.initial)
            st.append(ents)
            st.set_hard_state(hs)
        return st

    def _start(self, nid: NodeId, storage: MemoryStorage) -> SimNode:
        sn = SimNode(nid, storage)
        if self.p.drift:
            sn.rate = 1.0 + self.rng.uniform(-self.p.drift, self.p.drift)
        self.nodes[nid] = sn
        self._boot(sn)
        return sn

    def _boot(self, sn: SimNode) -> None:
        """(Re)start ``sn`` from its disk and its state machine (see ``durable_apply``)."""
        snap = sn.storage.snapshot()
        if self.durable_apply and sn.booted and sn.applied >= snap.meta.index:
            # The state machine kept its state and applied index (one SQLite transaction);
            # the core starts from there, with the membership at that index.
            sn.storage.conf_state = sn.conf
        else:
            # No durable state, or a snapshot persisted before the (asynchronous) apply
            # reached it: restore the snapshot first, as the runtime's recovery does.
            sn.applied = snap.meta.index
            sn.digest = SM_SNAPSHOT.unpack(snap.data)[1] if snap.data else 0
            sn.conf = snap.meta.conf_state
            sn.storage.conf_state = None
        sn.booted = True
        st = sn.storage
        hs = st.hard_state
        floor = max(sn.applied, st.snapshot().meta.index)
        if hs.commit < floor:
            # Recovery, as the runtime does it: what was applied or snapshotted was committed.
            st.set_hard_state(HardState(hs.term, hs.vote, floor))
        sn.hard = st.hard_state
        sn.handed = sn.applied
        sn.apply_q.clear()
        sn.pending = None
        sn.reads = {}
        sn.restart_at = -1
        sn.raw = self.variant.core(self._config(sn.id, sn.applied), sn.storage)
        self.checker.restarted(sn.id, sn.storage.hard_state, sn.raw.commit_index)
        sn.commit = sn.raw.commit_index

    def _crash(self, sn: SimNode, why: str, down: tuple[int, int] | None = None) -> None:
        lost = " (unpersisted write lost)" if sn.pending is not None else ""
        sn.raw = None
        sn.pending = None
        sn.reads = {}
        sn.paused_since = sn.paused_until = sn.queued_lease = -1
        sn.inbox = []
        self.stats.crashes += 1
        if down is not None and not self.calm:
            sn.restart_at = self.now + self.rng.randint(*down)
            self.ev(f"crash {sn.id} ({why}){lost}, restart at {sn.restart_at}")
        else:
            self.ev(f"stop {sn.id} ({why}){lost}")

    def _restart(self, sn: SimNode) -> None:
        if sn.up or sn.retired:
            sn.restart_at = -1
            return
        self._boot(sn)
        raw = sn.raw
        assert raw is not None
        hs = sn.storage.hard_state
        self.ev(
            f"restart {sn.id}: term {hs.term} vote {hs.vote} commit {raw.commit_index} "
            f"last {sn.storage.last_index()} applied {sn.applied}"
        )
        self.after(sn)

    def _maybe_retire(self, sn: SimNode) -> None:
        sn.retire_at = -1
        ld = self.leader()
        if ld is None or ld.raw is None:
            return
        cs = ld.raw.conf_state()
        if sn.id in cs.voters or sn.id in cs.learners:
            return
        sn.retired = True
        if sn.up:
            self._crash(sn, "removed from the cluster")

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

    # ------------------------------------------------------------------ faults
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

    def _faults(self) -> None:
        p = self.p
        rng = self.rng
        now = self.now
        if self.heal_at == now:
            self.net.heal()
            self.heal_at = -1
            self.ev("heal all links")
        if p.partition and self.heal_at < 0 and rng.random() < p.partition:
            self._partition()
        if p.crash and rng.random() < p.crash:
            live = self._live()
            if len(live) > len(self.initial) // 2:
                ld = self.leader()
                victim = ld if ld is not None and rng.random() < p.crash_leader else None
                self._crash(victim or rng.choice(live), "fault", p.down_len)
        if p.pause and rng.random() < p.pause:
            self._pause()
        if p.transfer and rng.random() < p.transfer:
            self._transfer()
        if p.campaign and rng.random() < p.campaign:
            live = self._live()
            sn = rng.choice(live) if live else None
            if sn is not None and sn.raw is not None:
                self.ev(f"{sn.id} campaigns")
                sn.raw.campaign()
                self.after(sn)
        if p.membership and rng.random() < p.membership:
            self._change_membership()

    def _partition(self) -> None:
        rng = self.rng
        ids = [nid for nid, sn in self.nodes.items() if not sn.retired]
        rng.shuffle(ids)
        ld = self.leader()
        kind = rng.randrange(5)
        net = self.net
        if kind == 0 and ld is not None:
            others = [i for i in ids if i != ld.id]
            net.partition([[ld.id], others])
            what = f"isolate leader {ld.id}"
        elif kind == 1 and ld is not None:
            # The leader keeps a minority: it may replicate to it but cannot commit.
            others = [i for i in ids if i != ld.id]
            k = max(0, (len(self.initial) - 1) // 2 - 1) + rng.randint(0, 1)
            side = [ld.id, *others[:k]]
            net.partition([side, others[k:]])
            what = f"leader side {side} vs {others[k:]}"
        elif kind == 2:
            cut = rng.randint(1, len(ids) - 1)
            net.partition([ids[:cut], ids[cut:]])
            what = f"split {ids[:cut]} | {ids[cut:]}"
        elif kind == 3:
            # Asymmetric: some one-way links cut.
            links = []
            for _ in range(rng.randint(1, len(ids))):
                a, b = rng.sample(ids, 2)
                net.block(a, b)
                links.append(f"{a}->{b}")
            what = f"one-way cuts {' '.join(links)}"
        else:
            # Bridge: two sides that only the bridge node connects.
            bridge, rest = ids[0], ids[1:]
            cut = len(rest) // 2
            side_a, side_b = rest[:cut], rest[cut:]
            for x in side_a:
                for y in side_b:
                    net.block(x, y)
                    net.block(y, x)
            what = f"bridge {bridge} between {side_a} and {side_b}"
        self.heal_at = self.now + rng.randint(*self.p.partition_len)
        self.stats.partitions += 1
        self.ev(f"partition: {what} until {self.heal_at}")

    def _pause(self) -> None:
        """Freeze a process (a GC pause, SIGSTOP, a stalled VM) for a while."""
        rng = self.rng
        ld = self.leader()
        live = self._live()
        sn = ld if ld is not None and rng.random() < self.p.crash_leader else None
        sn = sn or (rng.choice(live) if live else None)
        if sn is None or not sn.reachable:
            return
        sn.paused_since = self.now
        sn.paused_until = self.now + rng.randint(*self.p.pause_len)
        if self.p.lease and rng.random() < 0.5:
            sn.queued_lease_at = rng.randint(self.now, sn.paused_until - 1)
        self.ev(f"pause {sn.id} until {sn.paused_until}")

    def _resume(self, sn: SimNode) -> None:
        """Thaw a frozen process: missed ticks (if the runtime catches up), then its inbox."""
        missed = self.now - sn.paused_since
        sn.paused_since = sn.paused_until = -1
        inbox, sn.inbox = sn.inbox, []
        catch_up = self.p.pause_catch_up
        self.ev(
            f"resume {sn.id} after {missed} ticks "
            f"({'catching up the ticks' if catch_up else 'its clock lost them'}), "
            f"{len(inbox)} messages waiting"
        )
        for _ in range(missed if catch_up else 0):
            if sn.raw is None:
                return
            sn.raw.tick()
            self.after(sn)
        floor, sn.queued_lease, sn.queued_lease_at = sn.queued_lease, -1, -1
        raw = sn.raw
        if floor >= 0 and raw is not None and raw.role is LEADER:
            # A lease read that waited in the socket is served before the peers' messages.
            idx = raw.lease_read_index()
            if idx is not None:
                self.checker.read_result(sn.id, "lease (queued)", idx, floor, raw.term)
                self.stats.lease_reads += 1
        for m in inbox:
            if sn.raw is None:
                return
            sn.raw.step(m)
            if m.type == MT.SNAPSHOT:
                self.reports.append((m.frm, m.to, True))
            self.after(sn)

    def _transfer(self) -> None:
        ld = self.leader()
        if ld is None or ld.raw is None or not ld.reachable:
            return
        peers = [v for v in ld.raw.conf_state().voters if v != ld.id]
        if not peers:
            return
        to = self.rng.choice(peers)
        # Half the requests reach a follower, which forwards them to its leader.
        via = self.rng.choice(self._live()) if self.rng.random() < 0.5 else ld
        assert via.raw is not None
        self.ev(f"transfer leadership {ld.id} -> {to} (asked at {via.id})")
        self.stats.transfers += 1
        try:
            via.raw.transfer_leadership(to)
        except NotLeaderError:
            return
        self.after(via)

    def _change_membership(self) -> None:
        rng = self.rng
        ld = self.leader()
        if ld is None or ld.raw is None or not ld.reachable:
            return
        cs = ld.raw.conf_state()
        members = set(cs.voters) | set(cs.learners)
        spares = [n for n in self.universe if n not in members]
        options: list[ConfChange] = []
        if spares:
            options.append(ConfChange(ConfChangeType.ADD_LEARNER, rng.choice(spares)))
        if cs.learners:
            learner = rng.choice(cs.learners)
            options.append(ConfChange(ConfChangeType.ADD_VOTER, learner))
            options.append(ConfChange(ConfChangeType.REMOVE, learner))
        if len(cs.voters) > self.min_voters:
            options.append(ConfChange(ConfChangeType.REMOVE, rng.choice(cs.voters)))
        if not options:
            return
        cc = rng.choice(options)
        try:
            idx = ld.raw.propose_conf_change(cc)
        except (RaftError, ValueError) as exc:
            self.ev(f"conf change {cc.type.name} {cc.node_id} refused: {exc}")
            return
        self.ev(f"propose conf change {cc.type.name} {cc.node_id} at {idx} on {ld.id}")
        if cc.type == ConfChangeType.ADD_LEARNER:
            sn = self.nodes.get(cc.node_id)
            if sn is None:
                self._start(cc.node_id, self._disk(founder=False))
                self.ev(f"start new node {cc.node_id}")
            else:
                sn.retired = False
                sn.retire_at = -1
                if not sn.up:
                    self._restart(sn)
        self.after(ld)

    # ------------------------------------------------------------------ clients
    def payload(self) -> bytes:
        """A payload no client has proposed before."""
        self.payload_seq += 1
        return b"p%d" % self.payload_seq

    def _clients(self) -> None:
        p = self.p
        rng = self.rng
        if rng.random() < p.propose:
            self._propose()
        if p.read and rng.random() < p.read:
            self._read()
        if p.lease and rng.random() < p.lease:
            ld = self._believer()
            if ld is not None and ld.raw is not None:
                floor = self.checker.read_floor()
                idx = ld.raw.lease_read_index()
                if idx is not None:
                    self.checker.read_result(ld.id, "lease", idx, floor, ld.raw.term)
                    self.stats.lease_reads += 1

    def _propose(self) -> None:
        rng = self.rng
        hint = self.nodes.get(self.leader_hint) if self.leader_hint else None
        if hint is None or not hint.reachable or rng.random() < 0.2:
            live = self._live()
            if not live:
                return
            hint = rng.choice(live)
        raw = hint.raw
        assert raw is not None
        try:
            if rng.random() < self.p.batch:
                raw.propose_many([self.payload() for _ in range(rng.randint(2, 8))])
            else:
                raw.propose(self.payload())
        except NotLeaderError as exc:
            self.leader_hint = exc.leader
            return
        except ProposalDroppedError:
            return
        self.after(hint)

    def _read(self) -> None:
        rng = self.rng
        live = self._live()
        if not live:
            return
        ld = self._believer() if rng.random() < self.p.read_at_leader else None
        sn = ld if ld is not None else rng.choice(live)
        raw = sn.raw
        assert raw is not None
        ctx = b"r%d" % self.payload_seq
        self.payload_seq += 1
        floor = self.checker.read_floor()
        try:
            raw.read_index(ctx)
        except NotLeaderError:
            return
        sn.reads[ctx] = floor
        self.after(sn)

    # ------------------------------------------------------------------ liveness
    def _become_calm(self) -> None:
        self.calm = True
        self.liveness = Liveness(self.now, self.election_max, self.p.max_msg_bytes < 1024)
        self.net.heal()
        self.heal_at = -1
        self.net.faults = NetFaults(delay_max=1)
        self.ev("faults stop: links healed, network reliable, members restart")
        for sn in self.nodes.values():
            if sn.paused_since >= 0:
                self._resume(sn)
            if not sn.up and not sn.retired:
                self._restart(sn)


def _core_exception(exc: Exception) -> Violation | None:
    """An exception raised inside the core is a violation; one in the simulator is not."""
    tb = traceback.extract_tb(exc.__traceback__)
    if tb and "confman/raft/" in tb[-1].filename.replace("\\", "/"):
        frame = tb[-1]
        return Violation(
            "core-exception",
            f"{type(exc).__name__}: {exc} at {frame.filename.split('confman/')[-1]}:{frame.lineno}",
        )
    return None
