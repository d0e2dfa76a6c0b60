"""A seeded simulated network: loss, duplication, delay (so reordering) and partitions.

Time is the simulator's virtual clock in ticks. A message sent at ``now`` is delivered at
``now + delay`` unless it is dropped, or its link is blocked at send or delivery time.
All randomness comes from the ``random.Random`` handed in, so a seed fixes every fate.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from confman.raft.types import Message, NodeId


@dataclass(slots=True)
class NetFaults:
    """Fault rates of the network; the default is a perfect, instant network."""

    drop: float = 0.0  # probability a message is lost
    dup: float = 0.0  # probability a message is delivered twice
    delay_min: int = 0  # ticks
    delay_max: int = 0  # ticks, inclusive
    slow: float = 0.0  # probability of a long delay (up to ``slow_max`` ticks): stale replays
    slow_max: int = 0
    drop_append: float = 0.0  # extra loss for appends that carry entries (partial replication)
    snapshot_delay: int = 0  # snapshots are big: up to this many extra ticks in flight


@dataclass(slots=True)
class NetStats:
    """Counters of what happened to the messages sent."""

    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    blocked: int = 0
    duplicated: int = 0


@dataclass(slots=True)
class Network:
    """Messages in flight, ordered by delivery time, and the set of blocked links."""

    rng: random.Random
    faults: NetFaults = field(default_factory=NetFaults)
    stats: NetStats = field(default_factory=NetStats)
    _queue: list[tuple[int, int, Message]] = field(default_factory=list)
    _seq: int = 0
    _blocked: set[tuple[NodeId, NodeId]] = field(default_factory=set)

    # -- traffic ------------------------------------------------------------------------
    def send(self, msg: Message, now: int) -> bool:
        """Queue ``msg``; False if its link is blocked (the sender may report unreachable)."""
        self.stats.sent += 1
        if (msg.frm, msg.to) in self._blocked:
            self.stats.blocked += 1
            return False
        f = self.faults
        rng = self.rng
        if (f.drop and rng.random() < f.drop) or (
            f.drop_append and msg.entries and rng.random() < f.drop_append
        ):
            self.stats.dropped += 1
            return True
        copies = 1
        if f.dup and rng.random() < f.dup:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            if f.slow and rng.random() < f.slow:
                delay = rng.randint(f.delay_max, f.slow_max)
            elif f.delay_max > f.delay_min:
                delay = rng.randint(f.delay_min, f.delay_max)
            else:
                delay = f.delay_min
            if f.snapshot_delay and msg.snapshot is not None:
                delay += rng.randint(0, f.snapshot_delay)
            self._seq += 1
            heapq.heappush(self._queue, (now + delay, self._seq, msg))
        return True

    def next_due(self, now: int) -> Message | None:
        """Pop the next message due at or before ``now`` whose link is open, else None."""
        q = self._queue
        while q and q[0][0] <= now:
            msg = heapq.heappop(q)[2]
            if (msg.frm, msg.to) in self._blocked:
                self.stats.blocked += 1
                continue
            self.stats.delivered += 1
            return msg
        return None

    def in_flight(self) -> int:
        """Number of messages queued (including ones that will be blocked)."""
        return len(self._queue)

    # -- partitions ---------------------------------------------------------------------
    def block(self, frm: NodeId, to: NodeId) -> None:
        """Cut the one-way link ``frm -> to``."""
        self._blocked.add((frm, to))

    def partition(self, groups: list[list[NodeId]]) -> None:
        """Cut every link between nodes of different groups (both directions)."""
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self._blocked.add((x, y))
                        self._blocked.add((y, x))

    def heal(self) -> None:
        """Open every link."""
        self._blocked.clear()

    def is_blocked(self, frm: NodeId, to: NodeId) -> bool:
        return (frm, to) in self._blocked

    def blocked_links(self) -> list[tuple[NodeId, NodeId]]:
        """The cut links, sorted (for traces)."""
        return sorted(self._blocked)
