"""The leader's view of each follower: replication progress and flow control."""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0  # one append at a time until the match point is found
    REPLICATE = 1  # optimistic pipelining, bounded by inflights
    SNAPSHOT = 2  # a snapshot is on its way; no appends


class Inflights:
    """Last indices of the appends in flight to one follower (bounded)."""

    __slots__ = ("_q", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[int] = deque()

    def add(self, index: int) -> None:
        self._q.append(index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    """Replication state of one peer, as tracked by the leader."""

    __slots__ = (
        "ack_sent_tick",
        "inflights",
        "is_learner",
        "last_contact",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "snapshot_tick",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool, now: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_tick = 0
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        self.last_contact = now  # leader tick when we last heard from the peer
        self.ack_sent_tick = -(1 << 60)  # send tick of the newest heartbeat it acked

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, index: int, now: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_tick = now
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, n: int) -> bool:
        """An append up to ``n`` was acknowledged; False if it told us nothing new."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at ``rejected`` was refused; back off. False if the reply is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def as_dict(self) -> dict[str, object]:
        return {
            "match": self.match,
            "next": self.next,
            "state": self.state.name.lower(),
            "learner": self.is_learner,
            "inflight": len(self.inflights),
        }


def quorum_index(matches: list[int]) -> int:
    """The largest index that a majority of the given match indices has reached."""
    if not matches:
        return 0
    s = sorted(matches, reverse=True)
    return s[len(s) // 2]
