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

The handshake authenticates both ends with the cluster secret and admits only peers of the
current peer set; every later frame carries a MAC keyed from that handshake
(``confman.node.peer_auth``), so a machine on the path can neither inject, drop, replay nor
reorder frames. Without TLS the frames travel in clear: with ``tls`` (``[raft.tls]``, see
``confman.node.peer_tls``) every link is mutual TLS as well, and the MACs stay on. Refused
connections are counted by reason in ``refused`` (see ``confman.node.peer_inbound``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import logging
import os
import random
import ssl
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from confman.node.codec import CodecError, encode_message
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
    TAG_BYTES,
    FramedProtocol,
    HandshakeError,
    Hello,
    encode_hello,
    new_nonce,
    proof,
    session_macs,
)
from confman.node.peer_inbound import SNAP_END, SNAP_SIZE, Inbound, SnapshotSink
from confman.node.peer_tls import PeerTLSContexts, observe_handshakes
from confman.raft.types import Message, MessageType

__all__ = ["SNAPSHOT_CHUNK", "PeerTransport", "SnapshotSink"]

log = logging.getLogger("confman.node.transport")

Addr = tuple[str, int]

SNAPSHOT_CHUNK = 1 << 20
_WRITE_BATCH = 1 << 20  # bytes per transport.write when a large backlog is flushed
_WRITE_HIGH_WATER = 4 << 20
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
            secret = self.owner._secret
            expected = proof(secret, b"server", self.hello, self.server_nonce)
            if not hmac.compare_digest(expected, bytes(payload)):
                self.owner._refused("auth")
                self._reject(f"{self.peer_id} failed authentication (wrong cluster secret?)")
                return
            self.rx_mac, self.tx_mac = session_macs(
                secret, self.hello, self.server_nonce, server=False
            )
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

    def mac_failed(self, seq: int, kind: int) -> None:
        self.owner._refused("mac")
        super().mac_failed(seq, kind)


class PeerTransport:
    """Carries Raft messages between this node and its peers (see the module docstring).

    ``peers`` maps the other members' ids to their raft addresses (our own id is ignored).
    Inbound connections are accepted from a node that proves knowledge of ``secret`` and
    is in the current peer set (``update_peers`` changes it; removed peers are cut off).
    ``max_frame_bytes`` must be the same on every node. ``tls``: mutual TLS on every link.
    ``on_refused(reason)`` is called for each refused connection. Optional: ``connect_timeout``
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
        tls: PeerTLSContexts | None = None,
        on_refused: Callable[[str], None] | None = None,
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
        self._tls = tls
        if tls is not None:
            observe_handshakes(tls.server, lambda: self._refused("tls"))
        self._on_refused = on_refused
        #: Connections refused, by reason: tls, handshake, auth, non_member, mac.
        self.refused: Counter[str] = Counter()
        self._peers: dict[str, _Peer] = {}
        self._conns: set[FramedProtocol] = set()
        self._inbound_raft: dict[str, Inbound] = {}
        self._inbound_snap: dict[str, Inbound] = {}
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
        tls = self._tls
        self._server = await loop.create_server(
            lambda: Inbound(self),
            host,
            port,
            reuse_address=True,
            backlog=128,
            ssl=None if tls is None else tls.server,
            ssl_handshake_timeout=None if tls is None else self._handshake_timeout,
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
        mac = conn.tx_mac
        assert mac is not None  # set by the handshake, before the connection is handed out
        tag = mac.tag
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

        tls = self._tls
        try:
            async with asyncio.timeout(self._connect_timeout):
                if tls is None:
                    await self._loop.create_connection(factory, addr[0], addr[1])
                else:
                    await self._loop.create_connection(
                        factory,
                        addr[0],
                        addr[1],
                        ssl=tls.client,
                        ssl_handshake_timeout=self._connect_timeout,
                    )
                await made[-1].ready
        except BaseException as exc:
            for conn in made:
                conn.fail("dial abandoned", level=logging.DEBUG)
            if isinstance(exc, ssl.SSLError):
                self._refused("tls")
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
        for table in (self._inbound_raft, self._inbound_snap):
            conn = table.get(node)
            if conn is not None:
                conn.fail(f"{node} removed from the peers", level=logging.INFO)

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
            conn.write_frame(K_SNAP_HEADER, SNAP_SIZE.pack(size) + encode_message(wire))
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
                conn.write_frame(K_SNAP_END, SNAP_END.pack(offset, crc))
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
    def _refused(self, reason: str) -> None:
        """Count a refused connection (see ``refused``) and tell ``on_refused``."""
        self.refused[reason] += 1
        if self._on_refused is not None:
            try:
                self._on_refused(reason)
            except Exception:
                log.exception("on_refused raised")

    def _inbound_ready(self, conn: Inbound) -> None:
        table = self._inbound_raft if conn.channel == CH_RAFT else self._inbound_snap
        old = table.get(conn.peer_id)
        table[conn.peer_id] = conn
        if old is not None and old is not conn:
            old.fail(f"replaced by a newer connection from {conn.peer_id}", level=logging.INFO)

    def _inbound_closed(self, conn: Inbound) -> None:
        table = self._inbound_raft if conn.channel == CH_RAFT else self._inbound_snap
        if table.get(conn.peer_id) is conn:
            del table[conn.peer_id]

    def _reject(self, conn: Inbound, msg: Message) -> None:
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
