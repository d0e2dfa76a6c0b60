"""The accepting side of a peer connection: TLS, the server half of the handshake, then
a reader of Raft messages or of one snapshot stream (see ``confman.node.transport``).
What it needs of its transport comes in a ``confman.node.peer_link.LinkContext`` and two
callbacks, ``on_ready`` (authenticated) and ``on_closed``.

A peer is accepted only once it has proved knowledge of the cluster secret and its id is a
member of the transport's current peer set (what the runtime last gave ``update_peers``).
Every refusal is counted by reason in ``PeerTransport.refused``: ``tls`` (a failed TLS
handshake, seen by ``confman.node.peer_tls.observe_handshakes``), ``handshake``
(malformed, misaddressed or too slow), ``auth`` (wrong proof), ``non_member``, ``mac``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import zlib
from collections.abc import Callable

from confman.node.codec import CodecError, decode_message
from confman.node.framing import (
    CH_RAFT,
    HANDSHAKE_MAX_FRAME,
    K_AUTH,
    K_CHALLENGE,
    K_HELLO,
    K_MSG,
    K_SNAP_ACK,
    K_SNAP_CHUNK,
    K_SNAP_END,
    K_SNAP_HEADER,
    K_WELCOME,
    SNAP_END,
    SNAP_SIZE,
    SNAP_SIZE_UNKNOWN,
    FramedProtocol,
    HandshakeError,
    Hello,
    decode_hello,
    new_nonce,
    proof,
    session_macs,
)
from confman.node.peer_link import LinkContext, SnapshotSink
from confman.raft.types import Message, MessageType

__all__ = ["SNAP_END", "SNAP_SIZE", "Inbound", "SnapshotSink"]

log = logging.getLogger("confman.node.transport")


class Inbound(FramedProtocol):
    """A connection a peer dialled (after TLS, if on): server side of the handshake, a reader."""

    def __init__(
        self,
        link: LinkContext,
        on_ready: Callable[[Inbound], None],
        on_closed: Callable[[Inbound], None],
    ) -> None:
        super().__init__(HANDSHAKE_MAX_FRAME)
        self.link = link
        self._on_ready = on_ready
        self._on_closed = on_closed
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
        link = self.link
        link.conns.add(self)
        if link.closed:
            self.fail("transport stopped", level=logging.DEBUG)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(link.handshake_timeout, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._abort_sink()
        self.link.conns.discard(self)
        self._on_closed(self)

    def fail(self, reason: str, *, level: int = logging.WARNING) -> None:
        self._abort_sink()
        super().fail(reason, level=level)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        if not self.authenticated:
            self.link.refused("handshake")
            self.fail("handshake not completed in time")
            return
        # an authenticated snapshot stream: no frame for snapshot_timeout closes it
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_rx
        limit = self.link.snapshot_timeout
        if idle >= limit:
            self.fail(f"snapshot stream from {self.peer_id} stalled for {idle:.1f} s")
        else:
            self._timer = loop.call_later(limit - idle, self._on_timer)

    # -- handshake ------------------------------------------------------------------------
    def _hello_frame(self, kind: int, payload: memoryview) -> None:
        if kind != K_HELLO:
            self._refuse("handshake", f"expected a hello, got frame kind {kind}")
            return
        try:
            hello = decode_hello(payload)
        except HandshakeError as exc:
            self._refuse("handshake", f"bad hello: {exc}")
            return
        me = self.link.node_id
        if hello.server_id != me:
            self._refuse("handshake", f"hello addressed to {hello.server_id!r}, this is {me!r}")
            return
        if hello.client_id == me:
            self._refuse("handshake", "hello claims our own node id")
            return
        self.hello = hello
        self.server_nonce = new_nonce()
        self.write_frame(K_CHALLENGE, self.server_nonce)
        self.frame_received = self._auth_frame

    def _auth_frame(self, kind: int, payload: memoryview) -> None:
        hello = self.hello
        assert hello is not None
        link = self.link
        secret = link.secret
        if kind != K_AUTH or not hmac.compare_digest(
            proof(secret, b"client", hello, self.server_nonce), bytes(payload)
        ):
            self._refuse("auth", f"{hello.client_id!r} failed authentication (wrong secret?)")
            return
        if not link.is_member(hello.client_id):  # checked once it proved the secret
            self._refuse("non_member", f"{hello.client_id!r} is not a member of the cluster")
            return
        self.write_frame(K_WELCOME, proof(secret, b"server", hello, self.server_nonce))
        self.rx_mac, self.tx_mac = session_macs(secret, hello, self.server_nonce, server=True)
        self.authenticated = True
        self.peer_id = hello.client_id
        self.channel = hello.channel
        self.max_frame = link.max_frame
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.channel == CH_RAFT:
            self.frame_received = self._raft_frame
        else:
            self.frame_received = self._snap_frame
            self.last_rx = asyncio.get_running_loop().time()
            self._on_timer()  # arms the stall check
        self._on_ready(self)

    def _refuse(self, reason: str, why: str) -> None:
        self.link.refused(reason)
        self.fail(why)

    def mac_failed(self, seq: int, kind: int) -> None:
        self.link.refused("mac")
        super().mac_failed(seq, kind)

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
        link = self.link
        if (
            msg.frm == self.peer_id
            and msg.to == link.node_id
            and msg.type is not MessageType.SNAPSHOT
            and not link.closed
        ):  # the hot path, inlined
            link.received[self.peer_id] += 1
            try:
                link.on_message(msg)
            except Exception:
                log.exception("on_message raised for a %s from %s", msg.type.name, msg.frm)
        else:
            self._reject(msg)

    def _reject(self, msg: Message) -> None:
        """Drop a message with a spoofed ``frm``, a wrong ``to``, or a SNAPSHOT outside a stream."""
        link = self.link
        if link.closed:
            return
        link.rejected[self.peer_id] += 1
        if not self.spoof_logged:  # once per connection
            self.spoof_logged = True
            log.warning(
                "dropped a %s from %r to %r on the connection of %r",
                msg.type.name,
                msg.frm,
                msg.to,
                self.peer_id,
            )

    def _deliver(self, msg: Message) -> None:
        link = self.link
        if link.closed:
            return
        link.received[self.peer_id] += 1
        try:
            link.on_message(msg)
        except Exception:
            log.exception("on_message raised for a %s from %s", msg.type.name, self.peer_id)

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
            if len(payload) != SNAP_END.size:
                self.fail("malformed snapshot end frame")
                return
            size, crc = SNAP_END.unpack(payload)
            announced = size if self.expected == SNAP_SIZE_UNKNOWN else self.expected
            if size != announced or self.received != size or crc != self.crc:
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
                self._deliver(result)
                self._snap_done(True, "")
        elif kind == K_SNAP_HEADER and self.sink is None and not self.closing:
            self._snap_header(payload)
        else:
            self.fail(f"unexpected frame kind {kind} on a snapshot stream")

    def _snap_header(self, payload: memoryview) -> None:
        if len(payload) < SNAP_SIZE.size:
            self.fail("malformed snapshot header")
            return
        (size,) = SNAP_SIZE.unpack_from(payload, 0)
        try:
            msg = decode_message(payload[SNAP_SIZE.size :])  # type: ignore[arg-type]
        except CodecError as exc:
            self.fail(f"undecodable snapshot header: {exc}")
            return
        if (
            msg.type is not MessageType.SNAPSHOT
            or msg.snapshot is None
            or msg.frm != self.peer_id
            or msg.to != self.link.node_id
        ):
            self.fail(f"invalid snapshot header from {self.peer_id} ({msg.type.name})")
            return
        try:
            sink = self.link.open_snapshot_sink(msg, size)
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
