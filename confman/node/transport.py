"""Peer transport: authenticated, pipelined TCP between the Raft nodes of a cluster.

Each node listens once and dials each peer lazily. Raft messages to a peer travel on one
outbound connection (the peer's replies come back on the peer's own outbound connection),
written in batches: everything queued for the peer during one loop iteration goes out in one
``transport.write``. Snapshots stream on a separate connection per transfer, so heartbeats
never wait behind them. Wire format and handshake: ``confman.node.framing``.

Delivery is best effort, as Raft expects: on a connection failure the queue is dropped and
``on_unreachable`` reported once; a full queue drops its oldest non-essential messages
(appends, heartbeats and their responses before votes, ReadIndex and transfer messages).
Callbacks always run on the event loop from a callback of their own, never from inside
``send``, ``update_peers`` or ``stop``, and never after ``stop``.

The handshake authenticates both ends; the frames that follow are neither encrypted nor
MAC'd, so a network attacker who can inject into a TCP stream is out of scope (run the raft
port on a private network, or under TLS/WireGuard).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import os
import random
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from confman.node.codec import CodecError, decode_message, encode_message
from confman.node.framing import (
    CH_RAFT,
    CH_SNAPSHOT,
    HANDSHAKE_MAX_FRAME,
    HEADER,
    K_AUTH,
    K_CHALLENGE,
    K_HELLO,
    K_MSG,
    K_SNAP_ACK,
    K_SNAP_CHUNK,
    K_SNAP_END,
    K_SNAP_HEADER,
    K_WELCOME,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FramedProtocol,
    HandshakeError,
    Hello,
    decode_hello,
    encode_hello,
    new_nonce,
    proof,
)
from confman.raft.types import Message, MessageType

__all__ = ["SNAPSHOT_CHUNK", "PeerTransport", "SnapshotSink"]

log = logging.getLogger("confman.node.transport")

Addr = tuple[str, int]

SNAPSHOT_CHUNK = 1 << 20
_WRITE_BATCH = 1 << 20  # bytes per transport.write when a large backlog is flushed
_WRITE_HIGH_WATER = 4 << 20
_U64 = struct.Struct(">Q")
_END = struct.Struct(">QI")  # size, crc32
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


class SnapshotSink(Protocol):
    """Receiver side of one snapshot stream (created by ``open_snapshot_sink``)."""

    def write(self, chunk: bytes) -> None:
        """Append the next chunk of the file."""

    def finish(self) -> Message | None:
        """All bytes arrived: return the message to deliver, or None if verification failed."""

    def abort(self) -> None:
        """The transfer failed: discard what was written."""


def _settle(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` if still pending, without a 'never retrieved' warning if nobody waits."""
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()


def _read_chunk(fd: int, offset: int, size: int, crc: int) -> tuple[bytes, int]:
    chunk = os.pread(fd, size, offset)
    return chunk, zlib.crc32(chunk, crc)


class _Peer:
    """Outbound state for one peer: address, queue, connection, counters."""

    __slots__ = (
        "addr",
        "conn",
        "connected_once",
        "dropped",
        "failures",
        "flush_pending",
        "id",
        "queue",
        "reconnects",
        "removed",
        "sent",
        "snapshot_task",
        "task",
        "wake",
    )

    def __init__(self, node_id: str, addr: Addr) -> None:
        self.id = node_id
        self.addr = addr
        self.queue: deque[Message] = deque()
        self.conn: _Outbound | None = None
        self.task: asyncio.Task[None] | None = None
        self.snapshot_task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.flush_pending = False
        self.connected_once = False
        self.removed = False
        self.sent = self.dropped = self.reconnects = self.failures = 0


class _Outbound(FramedProtocol):
    """A connection we dialled: client side of the handshake, then a writer."""

    def __init__(self, owner: PeerTransport, peer_id: str, channel: int) -> None:
        super().__init__(HANDSHAKE_MAX_FRAME)
        self.owner = owner
        self.peer_id = peer_id
        self.channel = channel
        self.hello = Hello(PROTOCOL_VERSION, channel, owner.node_id, peer_id, new_nonce())
        self.server_nonce: bytes | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ack: asyncio.Future[bool] = loop.create_future()
        self.intentional = False  # closed on purpose: reconnect without reporting a failure
        self.frame_received = self._handshake_frame

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.owner._conns.add(self)
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.write_frame(K_HELLO, encode_hello(self.hello))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner._conns.discard(self)
        _settle(self.ready, ConnectionError(self.close_reason))
        if not self.ack.done():
            self.ack.set_result(False)

    def _reject(self, reason: str) -> None:
        self.fail(reason)
        _settle(self.ready, HandshakeError(reason))

    def _handshake_frame(self, kind: int, payload: memoryview) -> None:
        if kind == K_CHALLENGE and self.server_nonce is None and len(payload) == NONCE_BYTES:
            self.server_nonce = bytes(payload)
            auth = proof(self.owner._secret, b"client", self.hello, self.server_nonce)
            self.write_frame(K_AUTH, auth)
        elif kind == K_WELCOME and self.server_nonce is not None:
            expected = proof(self.owner._secret, b"server", self.hello, self.server_nonce)
            if not hmac.compare_digest(expected, bytes(payload)):
                self._reject(f"{self.peer_id} failed authentication (wrong cluster secret?)")
                return
            self.max_frame = self.owner._max_frame
            self.frame_received = self._frame
            if not self.ready.done():
                self.ready.set_result(None)
        else:
            self._reject(f"unexpected frame kind {kind} during the handshake")

    def _frame(self, kind: int, payload: memoryview) -> None:
        if self.channel == CH_SNAPSHOT and kind == K_SNAP_ACK and len(payload) == 1:
            if not self.ack.done():
                self.ack.set_result(payload[0] == 1)
        else:
            self.fail(f"unexpected frame kind {kind} from {self.peer_id}")


class _Inbound(FramedProtocol):
    """A connection a peer dialled: server side of the handshake, then a reader."""

    def __init__(self, owner: PeerTransport) -> None:
        super().__init__(HANDSHAKE_MAX_FRAME)
        self.owner = owner
        self.peer_id = ""
        self.channel = 0
        self.authenticated = False
        self.hello: Hello | None = None
        self.server_nonce = b""
        self.spoof_logged = False
        self._timer: asyncio.TimerHandle | None = None
        # snapshot stream state
        self.sink: SnapshotSink | None = None
        self.expected = self.received = self.crc = 0
        self.last_rx = 0.0
        self.frame_received = self._hello_frame

    # -- lifecycle ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self.owner
        owner._conns.add(self)
        if owner._closed:
            self.fail("transport stopped", level=logging.DEBUG)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(owner._handshake_timeout, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._abort_sink()
        self.owner._conns.discard(self)
        self.owner._inbound_closed(self)

    def fail(self, reason: str, *, level: int = logging.WARNING) -> None:
        self._abort_sink()
        super().fail(reason, level=level)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        if not self.authenticated:
            self.fail("handshake not completed in time")
            return
        # an authenticated snapshot stream: no frame for snapshot_timeout closes it
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_rx
        limit = self.owner._snapshot_timeout
        if idle >= limit:
            self.fail(f"snapshot stream from {self.peer_id} stalled for {idle:.1f} s")
        else:
            self._timer = loop.call_later(limit - idle, self._on_timer)

    # -- handshake ------------------------------------------------------------------------
    def _hello_frame(self, kind: int, payload: memoryview) -> None:
        if kind != K_HELLO:
            self.fail(f"expected a hello, got frame kind {kind}")
            return
        try:
            hello = decode_hello(payload)
        except HandshakeError as exc:
            self.fail(f"bad hello: {exc}")
            return
        me = self.owner.node_id
        if hello.server_id != me:
            self.fail(f"hello addressed to {hello.server_id!r}, this is {me!r}")
            return
        if hello.client_id == me:
            self.fail("hello claims our own node id")
            return
        self.hello = hello
        self.server_nonce = new_nonce()
        self.write_frame(K_CHALLENGE, self.server_nonce)
        self.frame_received = self._auth_frame

    def _auth_frame(self, kind: int, payload: memoryview) -> None:
        hello = self.hello
        assert hello is not None
        secret = self.owner._secret
        if kind != K_AUTH or not hmac.compare_digest(
            proof(secret, b"client", hello, self.server_nonce), bytes(payload)
        ):
            self.fail(f"{hello.client_id!r} failed authentication (wrong cluster secret?)")
            return
        self.write_frame(K_WELCOME, proof(secret, b"server", hello, self.server_nonce))
        self.authenticated = True
        self.peer_id = hello.client_id
        self.channel = hello.channel
        self.max_frame = self.owner._max_frame
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.channel == CH_RAFT:
            self.frame_received = self._raft_frame
        else:
            self.frame_received = self._snap_frame
            self.last_rx = asyncio.get_running_loop().time()
            self._on_timer()  # arms the stall check
        self.owner._inbound_ready(self)

    # -- raft channel ---------------------------------------------------------------------
    def _raft_frame(self, kind: int, payload: memoryview) -> None:
        if kind != K_MSG:
            self.fail(f"unexpected frame kind {kind} from {self.peer_id}")
            return
        try:
            msg = decode_message(payload)  # type: ignore[arg-type]  # msgpack reads buffers
        except CodecError as exc:
            self.fail(f"undecodable message from {self.peer_id}: {exc}")
            return
        owner = self.owner
        if (
            msg.frm == self.peer_id
            and msg.to == owner.node_id
            and msg.type is not MessageType.SNAPSHOT
            and not owner._closed
        ):  # the hot path, inlined
            owner._received[self.peer_id] += 1
            try:
                owner._on_message(msg)
            except Exception:
                log.exception("on_message raised for a %s from %s", msg.type.name, msg.frm)
        else:
            owner._reject(self, msg)

    # -- snapshot channel -----------------------------------------------------------------
    def _snap_frame(self, kind: int, payload: memoryview) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        if kind == K_SNAP_CHUNK and self.sink is not None:
            n = len(payload)
            if self.received + n > self.expected:
                self._snap_done(False, f"more than the announced {self.expected} bytes")
                return
            self.crc = zlib.crc32(payload, self.crc)
            self.received += n
            try:
                self.sink.write(bytes(payload))
            except Exception as exc:
                log.exception("snapshot sink for %s failed to write", self.peer_id)
                self._snap_done(False, f"sink write failed: {exc!r}")
        elif kind == K_SNAP_END and self.sink is not None:
            if len(payload) != _END.size:
                self.fail("malformed snapshot end frame")
                return
            size, crc = _END.unpack(payload)
            if size != self.expected or self.received != size or crc != self.crc:
                self._snap_done(False, "snapshot stream incomplete or corrupt (size/crc)")
                return
            sink, self.sink = self.sink, None
            try:
                result = sink.finish()
            except Exception:
                log.exception("snapshot sink for %s failed to finish", self.peer_id)
                result = None
            if result is None:
                self._snap_done(False, "received snapshot failed verification")
            else:
                self.owner._deliver(self.peer_id, result)
                self._snap_done(True, "")
        elif kind == K_SNAP_HEADER and self.sink is None and not self.closing:
            self._snap_header(payload)
        else:
            self.fail(f"unexpected frame kind {kind} on a snapshot stream")

    def _snap_header(self, payload: memoryview) -> None:
        if len(payload) < _U64.size:
            self.fail("malformed snapshot header")
            return
        (size,) = _U64.unpack_from(payload, 0)
        try:
            msg = decode_message(payload[_U64.size :])  # type: ignore[arg-type]
        except CodecError as exc:
            self.fail(f"undecodable snapshot header: {exc}")
            return
        if (
            msg.type is not MessageType.SNAPSHOT
            or msg.snapshot is None
            or msg.frm != self.peer_id
            or msg.to != self.owner.node_id
        ):
            self.fail(f"invalid snapshot header from {self.peer_id} ({msg.type.name})")
            return
        try:
            sink = self.owner._open_snapshot_sink(msg, size)
        except Exception as exc:
            log.exception("cannot open a snapshot sink for %s", self.peer_id)
            self.fail(f"cannot open a snapshot sink: {exc!r}")
            return
        self.sink, self.expected, self.received, self.crc = sink, size, 0, 0

    def _snap_done(self, ok: bool, reason: str) -> None:
        """Answer the sender and close; on failure abort the sink first."""
        self._abort_sink()
        if not ok:
            log.warning("snapshot from %s failed: %s", self.peer_id, reason)
        self.write_frame(K_SNAP_ACK, b"\x01" if ok else b"\x00")
        self.close("snapshot received" if ok else reason)

    def _abort_sink(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            try:
                sink.abort()
            except Exception:
                log.exception("snapshot sink for %s failed to abort", self.peer_id)


class PeerTransport:
    """Carries Raft messages between this node and its peers (see the module docstring).

    ``peers`` maps the other members' ids to their raft addresses (our own id is ignored).
    Inbound connections are accepted from any node that proves knowledge of ``secret``.
    ``max_frame_bytes`` must be the same on every node. Optional: ``connect_timeout``
    (dial plus handshake), ``handshake_timeout`` (inbound), ``snapshot_timeout`` (longest
    stall of a snapshot stream, and the wait for the receiver's verdict), ``backoff``
    (first and largest reconnect delay, jittered), ``rng`` for the jitter.
    """

    def __init__(
        self,
        node_id: str,
        secret: bytes,
        listen: tuple[str, int],
        peers: Mapping[str, tuple[str, int]],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[str], None],
        snapshot_file: Callable[[Message], str | None],
        open_snapshot_sink: Callable[[Message, int], SnapshotSink],
        on_snapshot_status: Callable[[str, bool], None],
        max_frame_bytes: int = 64 << 20,
        queue_limit: int = 10_000,
        *,
        connect_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        snapshot_timeout: float = 30.0,
        backoff: tuple[float, float] = (0.01, 1.0),
        rng: random.Random | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        if max_frame_bytes < SNAPSHOT_CHUNK + 16:
            raise ValueError(f"max_frame_bytes must be at least {SNAPSHOT_CHUNK + 16}")
        if queue_limit < 1:
            raise ValueError("queue_limit must be positive")
        self.node_id = node_id
        self._secret = bytes(secret)
        self._listen = listen
        self.port = listen[1]
        self._on_message = on_message
        self._on_unreachable = on_unreachable
        self._snapshot_file = snapshot_file
        self._open_snapshot_sink = open_snapshot_sink
        self._on_snapshot_status = on_snapshot_status
        self._max_frame = max_frame_bytes
        self._queue_limit = queue_limit
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._snapshot_timeout = snapshot_timeout
        self._backoff_min, self._backoff_max = backoff
        self._rng = rng or random.Random()
        self._peers: dict[str, _Peer] = {}
        self._conns: set[FramedProtocol] = set()
        self._inbound_raft: dict[str, _Inbound] = {}
        self._inbound_snap: dict[str, _Inbound] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._received: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self.update_peers(peers)

    # -- public API -----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listener (port 0 picks a free port: see ``self.port``)."""
        if self._server is not None or self._closed:
            raise RuntimeError("transport already started or stopped")
        self._loop = loop = asyncio.get_running_loop()
        host, port = self._listen
        self._server = await loop.create_server(
            lambda: _Inbound(self), host, port, reuse_address=True, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]
        for peer in self._peers.values():
            if peer.queue:
                self._schedule_flush(peer)

    async def stop(self) -> None:
        """Close the listener and every connection, cancel every task, drop every queue."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            peer.queue.clear()
        for task in self._tasks:
            task.cancel()
        for conn in list(self._conns):
            conn.fail("transport stopped", level=logging.DEBUG)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns):  # dialled while the tasks were unwinding
            conn.fail("transport stopped", level=logging.DEBUG)
        if self._server is not None:
            await self._server.wait_closed()
        pending = [c.closed for c in self._conns]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def send(self, msgs: Iterable[Message]) -> None:
        """Queue messages for their peers; never blocks. SNAPSHOT messages start a stream."""
        if self._closed:
            return
        peers = self._peers
        limit = self._queue_limit
        unknown: set[str] | None = None
        overflowed: set[str] | None = None
        for msg in msgs:
            peer = peers.get(msg.to)
            if peer is None:
                if unknown is None:
                    unknown = set()
                unknown.add(msg.to)
                continue
            if msg.type is MessageType.SNAPSHOT:
                self._start_snapshot(peer, msg)
                continue
            queue = peer.queue
            if len(queue) >= limit:
                self._drop_oldest(peer)
                if overflowed is None:
                    overflowed = set()
                overflowed.add(peer.id)
            queue.append(msg)
            if not peer.flush_pending:
                self._schedule_flush(peer)
        if unknown:
            for node in unknown:
                if node != self.node_id:
                    log.debug("no address for %r: message dropped", node)
                    self._defer(self._on_unreachable, node)
        if overflowed:
            for node in overflowed:
                log.warning("send queue to %s full: dropped the oldest messages", node)
                self._defer(self._on_unreachable, node)

    def update_peers(self, peers: Mapping[str, tuple[str, int]]) -> None:
        """Replace the peer set: new peers are dialled lazily, removed ones disconnected."""
        wanted = {k: (v[0], int(v[1])) for k, v in peers.items() if k != self.node_id}
        for node in [n for n in self._peers if n not in wanted]:
            self._remove_peer(node)
        for node, addr in wanted.items():
            peer = self._peers.get(node)
            if peer is None:
                self._peers[node] = _Peer(node, addr)
            elif peer.addr != addr:
                peer.addr = addr
                if peer.conn is not None:
                    peer.conn.intentional = True
                    peer.conn.fail(f"address of {node} changed", level=logging.INFO)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per peer: connected, queued, sent, dropped, reconnects, failures, received,
        rejected (inbound messages dropped for a spoofed ``frm``, a wrong ``to``, or a
        SNAPSHOT outside a stream), snapshot_in_flight."""
        return {
            node: {
                "connected": p.conn is not None and not p.conn.closing,
                "queued": len(p.queue),
                "sent": p.sent,
                "dropped": p.dropped,
                "reconnects": p.reconnects,
                "failures": p.failures,
                "received": self._received[node],
                "rejected": self._rejected[node],
                "snapshot_in_flight": p.snapshot_task is not None,
            }
            for node, p in self._peers.items()
        }

    # -- outbound: queue, flush, connection loop ------------------------------------------
    def _drop_oldest(self, peer: _Peer) -> None:
        queue = peer.queue
        for i, m in enumerate(queue):
            if m.type not in _ESSENTIAL:
                del queue[i]
                break
        else:
            queue.popleft()
        peer.dropped += 1

    def _schedule_flush(self, peer: _Peer) -> None:
        if self._loop is not None and not peer.flush_pending:
            peer.flush_pending = True
            self._loop.call_soon(self._flush, peer)

    def _flush(self, peer: _Peer) -> None:
        """Encode everything queued for ``peer`` and write it in one go (per ~1 MiB)."""
        peer.flush_pending = False
        queue = peer.queue
        if not queue or self._closed or peer.removed:
            return
        conn = peer.conn
        if conn is None:
            if peer.task is None or peer.task.done():
                peer.task = self._spawn(self._run_peer(peer))
            peer.wake.set()
            return
        if conn.paused or conn.closing:
            return  # resume_writing or the connection loop will come back
        parts: list[bytes] = []
        size = sent = 0
        limit = self._max_frame
        pack = HEADER.pack
        while queue:
            msg = queue.popleft()
            try:
                payload = encode_message(msg)
            except CodecError as exc:
                log.error("cannot encode a message to %s: %s", peer.id, exc)
                peer.dropped += 1
                continue
            n = len(payload) + 1
            if n > limit:
                log.error("message to %s of %d bytes exceeds the frame limit", peer.id, n)
                peer.dropped += 1
                continue
            parts.append(pack(n, K_MSG))
            parts.append(payload)
            sent += 1
            size += n + 4
            if size >= _WRITE_BATCH:
                conn.write(b"".join(parts))
                parts.clear()
                size = 0
                if conn.paused:
                    break
        if parts:
            conn.write(b"".join(parts))
        peer.sent += sent

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_max, self._backoff_min * 2 ** min(attempt - 1, 30))
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _run_peer(self, peer: _Peer) -> None:
        """Dial when there is something to send; hold the connection; back off on failure."""
        attempt = 0
        while True:
            while not peer.queue:
                peer.wake.clear()
                await peer.wake.wait()
            addr = peer.addr
            try:
                conn = await self._dial(addr, CH_RAFT, peer.id)
            except OSError as exc:  # includes timeouts and handshake failures
                attempt += 1
                level = logging.WARNING if attempt == 1 else logging.DEBUG
                self._peer_failed(peer, f"cannot connect to {addr}: {exc!r}", level)
                await asyncio.sleep(self._backoff(attempt))
                continue
            if peer.addr != addr:
                conn.fail("peer address changed while dialling", level=logging.DEBUG)
                continue
            attempt = 0
            peer.conn = conn
            if peer.connected_once:
                peer.reconnects += 1
            peer.connected_once = True
            conn.on_writable = lambda: self._schedule_flush(peer)
            try:
                self._flush(peer)
                await asyncio.wait((conn.closed,))
            finally:
                peer.conn = None
                conn.fail("transport stopped", level=logging.DEBUG)  # no-op if closed
            if conn.intentional:
                continue
            self._peer_failed(peer, f"connection lost: {conn.close_reason}", logging.WARNING)
            attempt = 1
            await asyncio.sleep(self._backoff(attempt))

    def _peer_failed(self, peer: _Peer, reason: str, level: int) -> None:
        dropped = len(peer.queue)
        peer.queue.clear()
        peer.dropped += dropped
        peer.failures += 1
        log.log(level, "peer %s unreachable (%d queued dropped): %s", peer.id, dropped, reason)
        self._defer(self._on_unreachable, peer.id)

    async def _dial(self, addr: Addr, channel: int, peer_id: str) -> _Outbound:
        """Connect and complete the handshake, or raise an OSError."""
        assert self._loop is not None
        made: list[_Outbound] = []

        def factory() -> _Outbound:
            made.append(_Outbound(self, peer_id, channel))
            return made[-1]

        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._loop.create_connection(factory, addr[0], addr[1])
                await made[-1].ready
        except BaseException:
            for conn in made:
                conn.fail("dial abandoned", level=logging.DEBUG)
            raise
        return made[-1]

    def _remove_peer(self, node: str) -> None:
        peer = self._peers.pop(node)
        peer.removed = True
        peer.queue.clear()
        for task in (peer.task, peer.snapshot_task):
            if task is not None:
                task.cancel()
        if peer.conn is not None:
            peer.conn.fail(f"{node} removed from the peers", level=logging.INFO)

    # -- outbound snapshots ---------------------------------------------------------------
    def _start_snapshot(self, peer: _Peer, msg: Message) -> None:
        if self._loop is None:
            log.warning("snapshot to %s dropped: transport not started", peer.id)
            return
        if peer.snapshot_task is not None:
            log.warning("snapshot to %s dropped: a transfer is already in flight", peer.id)
            peer.dropped += 1
            return
        peer.snapshot_task = self._spawn(self._stream_snapshot(peer, msg))

    async def _stream_snapshot(self, peer: _Peer, msg: Message) -> None:
        """Header, chunks, end; then wait for the receiver's verdict and report it."""
        ok = False
        conn: _Outbound | None = None
        fd = -1
        reading: concurrent.futures.Future[tuple[bytes, int]] | None = None
        try:
            if msg.snapshot is None:
                raise ValueError("SNAPSHOT message without a snapshot")
            path = self._snapshot_file(msg)
            if path is None:
                raise FileNotFoundError("no snapshot file for this message")
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            size = os.fstat(fd).st_size
            conn = await self._dial(peer.addr, CH_SNAPSHOT, peer.id)
            wire = replace(msg, snapshot=replace(msg.snapshot, data=b""))
            conn.write_frame(K_SNAP_HEADER, _U64.pack(size) + encode_message(wire))
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="confman-snapshot"
                )
            offset = crc = 0
            while offset < size and not conn.ack.done():
                n = min(SNAPSHOT_CHUNK, size - offset)
                reading = self._executor.submit(_read_chunk, fd, offset, n, crc)
                async with asyncio.timeout(self._snapshot_timeout):
                    chunk, crc = await asyncio.wrap_future(reading)
                    reading = None
                    if not chunk:
                        raise EOFError(f"{path} shrank to {offset} bytes while streaming")
                    conn.write_frame(K_SNAP_CHUNK, chunk)
                    offset += len(chunk)
                    await conn.drain()
            if not conn.ack.done():
                conn.write_frame(K_SNAP_END, _END.pack(offset, crc))
            async with asyncio.timeout(self._snapshot_timeout):
                ok = await conn.ack
            if not ok:
                log.warning("snapshot to %s rejected by the receiver", peer.id)
        except Exception as exc:
            log.warning("snapshot to %s failed: %r", peer.id, exc)
        finally:
            if conn is not None:
                conn.fail("snapshot stream over", level=logging.DEBUG)
            if fd >= 0:
                if reading is not None and not reading.done():
                    # a worker still reads from fd: close it when the read returns
                    reading.add_done_callback(lambda _f, fd=fd: os.close(fd))
                else:
                    os.close(fd)
            if peer.snapshot_task is asyncio.current_task():
                peer.snapshot_task = None
        if not peer.removed:
            self._defer(self._on_snapshot_status, peer.id, ok)

    # -- inbound --------------------------------------------------------------------------
    def _inbound_ready(self, conn: _Inbound) -> None:
        table = self._inbound_raft if conn.channel == CH_RAFT else self._inbound_snap
        old = table.get(conn.peer_id)
        table[conn.peer_id] = conn
        if old is not None and old is not conn:
            old.fail(f"replaced by a newer connection from {conn.peer_id}", level=logging.INFO)

    def _inbound_closed(self, conn: _Inbound) -> None:
        table = self._inbound_raft if conn.channel == CH_RAFT else self._inbound_snap
        if table.get(conn.peer_id) is conn:
            del table[conn.peer_id]

    def _reject(self, conn: _Inbound, msg: Message) -> None:
        """Drop a message with a spoofed ``frm``, a wrong ``to``, or a SNAPSHOT outside a stream."""
        if self._closed:
            return
        self._rejected[conn.peer_id] += 1
        if not conn.spoof_logged:  # once per connection
            conn.spoof_logged = True
            log.warning(
                "dropped a %s from %r to %r on the connection of %r",
                msg.type.name,
                msg.frm,
                msg.to,
                conn.peer_id,
            )

    def _deliver(self, peer_id: str, msg: Message) -> None:
        if self._closed:
            return
        self._received[peer_id] += 1
        try:
            self._on_message(msg)
        except Exception:
            log.exception("on_message raised for a %s from %s", msg.type.name, peer_id)

    # -- helpers --------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _defer(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._closed:
            self._loop.call_soon(self._call, fn, args)

    def _call(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._closed:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("transport callback %s raised", getattr(fn, "__name__", fn))
