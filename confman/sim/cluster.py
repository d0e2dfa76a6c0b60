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

The members' runtimes (Ready handling, sends, state machines) live in ``execute``, the
fault schedule in ``faults``; both are bases of ``Cluster``.

The run has two phases. During ``profile.fault_ticks`` the profile's faults happen; then
faults stop and ``Liveness`` (module ``liveness``) requires the cluster to elect, commit and
converge within bounds derived from the election timeout.
"""

from __future__ import annotations

import random
import traceback

from confman.raft.bootstrap import bootstrap_entries
from confman.raft.config import Config
from confman.raft.storage import MemoryStorage
from confman.raft.types import (
    ConfState,
    HardState,
    NodeId,
    NotLeaderError,
    ProposalDroppedError,
)
from confman.sim.checks import Checker, Violation
from confman.sim.faults import Faults
from confman.sim.liveness import LEADER_BOUND_TIMEOUTS, Liveness
from confman.sim.model import (
    CORRECT,
    SM_SNAPSHOT,
    RunResult,
    RunStats,
    SimNode,
    Variant,
)
from confman.sim.network import NetFaults, Network
from confman.sim.scenarios import Profile

SPARES = 2  # nodes outside the initial configuration, for membership changes


class Cluster(Faults):
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
