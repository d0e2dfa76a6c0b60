"""The fault schedule of a simulated run: partitions, crashes, pauses, transfers, membership.

``Faults`` is the part of ``Cluster`` (module ``cluster``) that, during a run's fault phase,
draws the profile's faults each tick from the run's seeded ``random.Random``.
"""

from __future__ import annotations

from confman.raft.storage import MemoryStorage
from confman.raft.types import (
    ConfChange,
    ConfChangeType,
    MessageType,
    NodeId,
    NotLeaderError,
    RaftError,
)
from confman.sim.execute import LEADER, ReadyHandling
from confman.sim.model import SimNode

MT = MessageType


class Faults(ReadyHandling):
    """Faults and operations a run's profile schedules (a base of ``Cluster``)."""

    heal_at: int
    initial: tuple[NodeId, ...]
    universe: tuple[NodeId, ...]
    min_voters: int

    def _restart(self, sn: SimNode) -> None:
        raise NotImplementedError  # Cluster's

    def _start(self, nid: NodeId, storage: MemoryStorage) -> SimNode:
        raise NotImplementedError  # Cluster's

    def _disk(self, founder: bool) -> MemoryStorage:
        raise NotImplementedError  # Cluster's

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
