"""Pending ReadIndex requests waiting for a heartbeat round to confirm leadership."""

from __future__ import annotations

from dataclasses import dataclass, field

from confman.raft.types import NodeId


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    req_from: NodeId
    context: bytes
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    """ReadIndex requests in arrival order, each with the set of peers that confirmed it."""

    __slots__ = ("_pending", "_queue")

    def __init__(self) -> None:
        self._pending: dict[bytes, ReadIndexStatus] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: int, context: bytes, req_from: NodeId) -> bool:
        """Queue a request; False if one with the same context is already pending."""
        if context in self._pending:
            return False
        self._pending[context] = ReadIndexStatus(index, req_from, context)
        self._queue.append(context)
        return True

    def recv_ack(self, peer: NodeId, context: bytes) -> set[NodeId] | None:
        status = self._pending.get(context)
        if status is None:
            return None
        status.acks.add(peer)
        return status.acks

    def advance(self, context: bytes) -> list[ReadIndexStatus]:
        """Release every request up to and including ``context`` (it was confirmed)."""
        if context not in self._pending:
            return []
        pos = self._queue.index(context)
        done = [self._pending.pop(c) for c in self._queue[: pos + 1]]
        del self._queue[: pos + 1]
        return done

    def last_pending(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def reset(self) -> None:
        self._pending.clear()
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
