"""The calm phase: once faults stop, the cluster must elect, commit and converge in time.

``Liveness.step`` runs every tick of the calm phase (links healed, the network reliable
with delays of at most one tick, crashed members restarted) and raises a ``liveness``
``Violation`` when a bound is missed:

- the cluster is never without a leader for more than ``leader_bound`` ticks
  (``LEADER_BOUND_TIMEOUTS`` election timeouts: ``8 * election_tick_max``);
- a proposal accepted by a leader is applied within ``commit_bound`` ticks (one election
  timeout: ``election_tick_max``) unless that leader loses its term first; the client then
  retries at the new leader;
- after ``LIVE_PROPOSALS`` acknowledged proposals, every live member applies up to the
  cluster's commit index within ``commit_bound`` more ticks of the same leader;
- where a profile throttles appends to about one entry each (``max_msg_bytes`` < 1 KiB),
  both bounds grow by ``per_entry`` = 3 ticks (a round trip plus slack) per entry of backlog;
- leadership changes at most ``MAX_CALM_LEADER_CHANGES`` times (a node that rejoins with a
  higher term may legitimately depose the first leader, more so without pre-vote).
"""

from __future__ import annotations

from typing import Protocol

from confman.raft.node import RawNode
from confman.raft.types import NodeId, NotLeaderError, ProposalDroppedError
from confman.sim.checks import Checker, Violation
from confman.sim.model import RunStats, SimNode

LIVE_PROPOSALS = 3
MAX_CALM_LEADER_CHANGES = 3
LEADER_BOUND_TIMEOUTS = 8


class Driver(Protocol):
    """What the judge needs from the cluster it drives."""

    now: int
    checker: Checker
    nodes: dict[NodeId, SimNode]
    stats: RunStats

    def leader(self) -> SimNode | None: ...

    def payload(self) -> bytes: ...

    def after(self, sn: SimNode) -> None: ...

    def ev(self, text: str) -> None: ...


class Liveness:
    """State of the calm phase's client and deadlines (see module docstring)."""

    def __init__(self, since: int, election_max: int, throttled: bool) -> None:
        self.since = since
        self.leader_bound = LEADER_BOUND_TIMEOUTS * election_max
        self.commit_bound = election_max
        self.per_entry = 3 if throttled else 0
        # The client's proposal in flight: (payload, deadline, leader term, leader).
        self.live: tuple[bytes, int, int, NodeId] | None = None
        self.live_acked = 0
        self.leader_changes = 0
        self.calm_leader: tuple[NodeId, int] | None = None
        self.no_leader_since = -1
        self.converge_by = -1

    def step(self, c: Driver) -> bool:
        """Drive and judge one calm tick; True once liveness has been shown."""
        now = c.now
        ld = c.leader()
        if ld is None:
            if self.no_leader_since < 0:
                self.no_leader_since = now
            elif now - self.no_leader_since > self.leader_bound:
                raise Violation(
                    "liveness", f"no leader for {self.leader_bound} ticks after faults stopped"
                )
            return False
        self.no_leader_since = -1
        raw = ld.raw
        assert raw is not None
        if c.stats.leader_after_calm < 0:
            c.stats.leader_after_calm = now - self.since
        if self.calm_leader != (ld.id, raw.term):
            if self.calm_leader is not None:
                self.leader_changes += 1
                if self.leader_changes > MAX_CALM_LEADER_CHANGES:
                    raise Violation(
                        "liveness",
                        f"leadership changed {self.leader_changes} times after faults stopped",
                        (self.calm_leader[0], ld.id),
                        raw.term,
                        None,
                    )
            self.calm_leader = (ld.id, raw.term)
            self.converge_by = -1
        if self.live_acked < LIVE_PROPOSALS:
            self._propose(c, ld, raw)
            return False
        target = c.checker.max_commit
        cs = raw.conf_state()
        behind = [
            sn
            for sn in c.nodes.values()
            if sn.raw is not None
            and sn.applied < target
            and (sn.id in cs.voters or sn.id in cs.learners)
        ]
        if not behind:
            return True
        if self.converge_by < 0:
            backlog = max(target - sn.applied for sn in behind)
            self.converge_by = now + self.commit_bound + self.per_entry * backlog
        if now > self.converge_by:
            sn = behind[0]
            raise Violation(
                "liveness",
                f"{sn.id} applied only {sn.applied} of {target} by tick {self.converge_by}",
                (sn.id,),
                None,
                sn.applied + 1,
            )
        return False

    def _propose(self, c: Driver, ld: SimNode, raw: RawNode) -> None:
        """Propose to the leader; each proposal a stable leader accepted must commit in time."""
        live = self.live
        if live is not None:
            payload, deadline, term, nid = live
            at = c.checker.applied_at(payload)
            if at is not None:
                self.live_acked += 1
                self.live = None
                c.ev(f"liveness proposal {payload.decode()} committed at {at}")
                return
            if nid == ld.id and term == raw.term:
                if c.now > deadline:
                    raise Violation(
                        "liveness",
                        f"proposal {payload.decode()} accepted by leader {nid} not committed "
                        f"by tick {deadline}",
                        (nid,),
                        term,
                        None,
                    )
                return
        try:
            payload = c.payload()
            idx = raw.propose(payload)
        except (NotLeaderError, ProposalDroppedError):
            return
        deadline = c.now + self.commit_bound + self.per_entry * (idx - raw.commit_index)
        self.live = (payload, deadline, raw.term, ld.id)
        c.after(ld)
