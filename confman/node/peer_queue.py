"""Outbound queues: one `PeerQueue` per peer, its batched flush and its connection loop.

``PeerTransport.send`` appends to the peer's queue and schedules one `PeerQueue.flush` per
loop iteration, which encodes everything queued and writes it in one ``transport.write``
(per ~1 MiB). A full queue drops its oldest non-essential message (appends, heartbeats and
their responses before votes, ReadIndex and transfer messages). The connection loop
(`PeerQueue.run`) dials when there is something to send, holds the connection, and backs off
(jittered, doubling) after a failure; a failure drops the queue and reports the peer
unreachable once. What the queues share with their transport is one `Outbox`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from confman.node.codec import CodecError, encode_message
from confman.node.framing import CH_RAFT, HEADER, K_MSG, TAG_BYTES
from confman.node.peer_link import Addr, LinkContext
from confman.node.peer_outbound import Outbound
from confman.raft.types import Message, MessageType

__all__ = ["Outbox", "PeerQueue"]

log = logging.getLogger("confman.node.transport")

_WRITE_BATCH = 1 << 20  # bytes per transport.write when a large backlog is flushed
#: Kept when a full queue drops its oldest messages.
_ESSENTIAL = frozenset(
    {
        MessageType.VOTE,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE,
        MessageType.PRE_VOTE_RESP,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX,
        MessageType.READ_INDEX_RESP,
        MessageType.TRANSFER_LEADER,
    }
)


@dataclass(eq=False, slots=True)
class Outbox:
    """What every peer's queue shares with its transport.

    ``dial(addr, channel, peer_id)`` connects and authenticates; ``spawn`` runs a task the
    transport cancels on ``stop``; ``unreachable(peer_id)`` reports a peer unreachable (from
    a callback of its own). ``loop`` is set when the transport starts.
    """

    link: LinkContext
    dial: Callable[[Addr, int, str], Awaitable[Outbound]]
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
    unreachable: Callable[[str], None]
    backoff_min: float
    backoff_max: float
    rng: random.Random
    loop: asyncio.AbstractEventLoop | None = None

    def backoff(self, attempt: int) -> float:
        """The delay before reconnect attempt ``attempt`` (from 1): doubling, jittered."""
        delay: float = min(self.backoff_max, self.backoff_min * 2 ** min(attempt - 1, 30))
        return delay * (0.5 + 0.5 * self.rng.random())


class PeerQueue:
    """Outbound state for one peer: address, queue, connection, counters."""

    __slots__ = (
        "addr",
        "conn",
        "connected_once",
        "dropped",
        "failures",
        "flush_pending",
        "id",
        "outbox",
        "queue",
        "reconnects",
        "removed",
        "sent",
        "snapshot_task",
        "task",
        "wake",
    )

    def __init__(self, node_id: str, addr: Addr, outbox: Outbox) -> None:
        self.id = node_id
        self.addr = addr
        self.outbox = outbox
        self.queue: deque[Message] = deque()
        self.conn: Outbound | None = None
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.flush_pending = False
        self.connected_once = False
        self.removed = False
        self.sent = self.dropped = self.reconnects = self.failures = 0

    def drop_oldest(self) -> None:
        """Make room: drop the oldest non-essential message (else the oldest)."""
        queue = self.queue
        for i, m in enumerate(queue):
            if m.type not in _ESSENTIAL:
                del queue[i]
                break
        else:
            queue.popleft()
        self.dropped += 1

    def schedule_flush(self) -> None:
        loop = self.outbox.loop
        if loop is not None and not self.flush_pending:
            self.flush_pending = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Encode everything queued and write it in one go (per ~1 MiB)."""
        self.flush_pending = False
        queue = self.queue
        outbox = self.outbox
        if not queue or outbox.link.closed or self.removed:
            return
        conn = self.conn
        if conn is None:
            if self.task is None or self.task.done():
                self.task = outbox.spawn(self.run())
            self.wake.set()
            return
        if conn.paused or conn.closing:
            return  # resume_writing or the connection loop will come back
        parts: list[bytes] = []
        size = sent = 0
        limit = outbox.link.max_frame
        pack = HEADER.pack
        mac = conn.tx_mac
        assert mac is not None  # set by the handshake, before the connection is handed out
        tag = mac.tag
        while queue:
            msg = queue.popleft()
            try:
                payload = encode_message(msg)
            except CodecError as exc:
                log.error("cannot encode a message to %s: %s", self.id, exc)
                self.dropped += 1
                continue
            n = len(payload) + 1
            if n > limit:
                log.error("message to %s of %d bytes exceeds the frame limit", self.id, n)
                self.dropped += 1
                continue
            parts.append(pack(n + TAG_BYTES, K_MSG))
            parts.append(payload)
            parts.append(tag(K_MSG, payload))
            sent += 1
            size += n + 4 + TAG_BYTES
            if size >= _WRITE_BATCH:
                conn.write(b"".join(parts))
                parts.clear()
                size = 0
                if conn.paused:
                    break
        if parts:
            conn.write(b"".join(parts))
        self.sent += sent

    async def run(self) -> None:
        """Dial when there is something to send; hold the connection; back off on failure."""
        outbox = self.outbox
        attempt = 0
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            addr = self.addr
            try:
                conn = await outbox.dial(addr, CH_RAFT, self.id)
            except OSError as exc:  # includes timeouts and handshake failures
                attempt += 1
                level = logging.WARNING if attempt == 1 else logging.DEBUG
                self.failed(f"cannot connect to {addr}: {exc!r}", level)
                await asyncio.sleep(outbox.backoff(attempt))
                continue
            if self.addr != addr:
                conn.fail("peer address changed while dialling", level=logging.DEBUG)
                continue
            attempt = 0
            self.conn = conn
            if self.connected_once:
                self.reconnects += 1
            self.connected_once = True
            conn.on_writable = self.schedule_flush
            try:
                self.flush()
                await asyncio.wait((conn.closed,))
            finally:
                self.conn = None
                conn.fail("transport stopped", level=logging.DEBUG)  # no-op if closed
            if conn.intentional:
                continue
            self.failed(f"connection lost: {conn.close_reason}", logging.WARNING)
            attempt = 1
            await asyncio.sleep(outbox.backoff(attempt))

    def failed(self, reason: str, level: int) -> None:
        """Drop the queue and report the peer unreachable."""
        dropped = len(self.queue)
        self.queue.clear()
        self.dropped += dropped
        self.failures += 1
        log.log(level, "peer %s unreachable (%d queued dropped): %s", self.id, dropped, reason)
        self.outbox.unreachable(self.id)

    def remove(self) -> None:
        """The peer left the peer set: drop the queue, cancel the tasks, close the link."""
        self.removed = True
        self.queue.clear()
        for task in (self.task, self.snapshot_task):
            if task is not None:
                task.cancel()
        if self.conn is not None:
            self.conn.fail(f"{self.id} removed from the peers", level=logging.INFO)
