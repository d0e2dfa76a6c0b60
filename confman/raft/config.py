"""Configuration of one Raft core."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from confman.raft.types import NodeId


@dataclass(slots=True)
class Config:
    """Settings of one core. Times are in ticks; the runtime chooses the tick length.

    With the default 10 ms tick: election timeout 150-300 ms, heartbeat 70 ms.
    """

    id: NodeId
    election_tick_min: int = 15
    election_tick_max: int = 30  # exclusive upper bound of the randomised timeout
    heartbeat_tick: int = 7
    #: Leader lease in ticks; must be shorter than ``election_tick_min``.
    lease_tick: int | None = None
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_committed_size_per_ready: int = 8 << 20
    #: Index of the last entry the state machine has applied (on restart).
    applied: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending setting."""
        if not self.id:
            raise ValueError("id must be a non-empty node id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be > 0")
        if self.election_tick_min <= self.heartbeat_tick:
            raise ValueError("election_tick_min must be greater than heartbeat_tick")
        if self.election_tick_max <= self.election_tick_min:
            raise ValueError("election_tick_max must be greater than election_tick_min")
        if self.lease_tick is None:
            self.lease_tick = max(1, self.election_tick_min - 2)
        if not 0 < self.lease_tick < self.election_tick_min:
            raise ValueError("lease_tick must be in (0, election_tick_min)")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be > 0")
