"""Wire format of the peer transport: frames, the authentication handshake, a framed Protocol.

A frame is ``u32 length (big-endian) | u8 kind | payload [| tag]``; ``length`` counts the
kind byte, the payload and the tag. Every connection starts with a mutual challenge/response
handshake, whose four frames carry no tag::

    client -> HELLO      magic | u16 version | u8 channel | nonce (32) | client id | server id
    server -> CHALLENGE  server nonce (32)
    client -> AUTH       HMAC-SHA256(secret, "client" transcript)
    server -> WELCOME    HMAC-SHA256(secret, "server" transcript)

The transcript binds the protocol version, the channel, both node ids and both nonces, so a
proof is valid for one connection only and a client proof cannot be reflected as a server
proof. The secret never travels. The server sends nothing but a random nonce before the
client has proved itself; the client sends nothing but its proof before the server has.
Identifiers are UTF-8, 1 to 255 bytes.

Every later frame, in both directions, ends in a 16-byte tag keyed from the secret and the
transcript (``confman.node.peer_auth``): a frame that fails its check closes the connection
through ``FramedProtocol.mac_failed``. Version 2 added the tags; version 1 peers are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confman.node.peer_auth import TAG_BYTES, FrameMac, session_keys

__all__ = [
    "CH_RAFT",
    "CH_SNAPSHOT",
    "HANDSHAKE_MAX_FRAME",
    "HEADER",
    "K_AUTH",
    "K_CHALLENGE",
    "K_HELLO",
    "K_MSG",
    "K_SNAP_ACK",
    "K_SNAP_CHUNK",
    "K_SNAP_END",
    "K_SNAP_HEADER",
    "K_WELCOME",
    "MAGIC",
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "SNAP_END",
    "SNAP_SIZE",
    "SNAP_SIZE_UNKNOWN",
    "TAG_BYTES",
    "FrameMac",
    "FramedProtocol",
    "HandshakeError",
    "Hello",
    "decode_hello",
    "encode_hello",
    "frame",
    "new_nonce",
    "proof",
    "session_macs",
    "transcript",
]

log = logging.getLogger("confman.node.transport")

MAGIC = b"CFMNPEER"
PROTOCOL_VERSION = 2  # 2: every frame after the handshake is MAC'd
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
NONCE_BYTES = 32
HANDSHAKE_MAX_FRAME = 1024  # before authentication nobody may make us buffer more

HEADER = struct.Struct(">IB")  # length (kind byte + payload), kind
_HELLO = struct.Struct(">8sHB32s")  # magic, version, channel, client nonce

# frame kinds
K_HELLO = 1
K_CHALLENGE = 2
K_AUTH = 3
K_WELCOME = 4
K_MSG = 5  # one encoded Raft message
K_SNAP_HEADER = 6  # u64 size | encoded SNAPSHOT message (snapshot data stripped)
K_SNAP_CHUNK = 7  # raw bytes of the snapshot file
K_SNAP_END = 8  # u64 size | u32 crc32 of the whole stream
K_SNAP_ACK = 9  # u8 ok (receiver -> sender)
SNAP_SIZE = struct.Struct(">Q")  # snapshot header: size of the file
#: Header size of a stream produced while it is sent (its end frame gives the size).
SNAP_SIZE_UNKNOWN = (1 << 64) - 1
SNAP_END = struct.Struct(">QI")  # snapshot end: size, crc32

# channels
CH_RAFT = 1
CH_SNAPSHOT = 2
_CHANNELS = frozenset({CH_RAFT, CH_SNAPSHOT})


class HandshakeError(ConnectionError):
    """The peer failed authentication or spoke an unknown protocol."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One complete frame (copies ``payload``; use ``HEADER`` directly on hot paths)."""
    return HEADER.pack(len(payload) + 1, kind) + payload


def new_nonce() -> bytes:
    """A fresh random nonce."""
    return os.urandom(NONCE_BYTES)


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's opening: who it is, whom it wants, on which channel, and its nonce."""

    version: int
    channel: int
    client_id: str
    server_id: str
    nonce: bytes


def _id_bytes(node_id: str) -> bytes:
    raw = node_id.encode("utf-8")
    if not 1 <= len(raw) <= 255:
        raise ValueError(f"node id must be 1 to 255 UTF-8 bytes: {node_id!r}")
    return bytes((len(raw),)) + raw


def encode_hello(hello: Hello) -> bytes:
    """The payload of a HELLO frame."""
    return (
        _HELLO.pack(MAGIC, hello.version, hello.channel, hello.nonce)
        + _id_bytes(hello.client_id)
        + _id_bytes(hello.server_id)
    )


def decode_hello(data: bytes | memoryview) -> Hello:
    """Parse a HELLO payload; ``HandshakeError`` names what is wrong."""
    if len(data) < _HELLO.size + 2:
        raise HandshakeError("short hello")
    magic, version, channel, nonce = _HELLO.unpack_from(data, 0)
    if magic != MAGIC:
        raise HandshakeError("bad magic (not a confman peer)")
    if version not in SUPPORTED_VERSIONS:
        raise HandshakeError(f"unsupported protocol version {version}")
    if channel not in _CHANNELS:
        raise HandshakeError(f"unknown channel {channel}")
    ids: list[str] = []
    off = _HELLO.size
    for _ in range(2):
        if off >= len(data):
            raise HandshakeError("short hello")
        n = data[off]
        raw = bytes(data[off + 1 : off + 1 + n])
        if n == 0 or len(raw) != n:
            raise HandshakeError("bad node id in hello")
        try:
            ids.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise HandshakeError("node id is not UTF-8") from None
        off += 1 + n
    if off != len(data):
        raise HandshakeError("trailing bytes in hello")
    return Hello(version, channel, ids[0], ids[1], nonce)


def transcript(hello: Hello, server_nonce: bytes) -> bytes:
    """What both sides agreed on: version, channel, both ids, both nonces."""
    return b"".join(
        (
            struct.pack(">HB", hello.version, hello.channel),
            _id_bytes(hello.client_id),
            _id_bytes(hello.server_id),
            hello.nonce,
            server_nonce,
        )
    )


def proof(secret: bytes, role: bytes, hello: Hello, server_nonce: bytes) -> bytes:
    """HMAC-SHA256 over the handshake transcript; ``role`` is ``b"client"`` or ``b"server"``."""
    data = b"confman-peer-auth\x00" + role + transcript(hello, server_nonce)
    return hmac.new(secret, data, hashlib.sha256).digest()


def session_macs(
    secret: bytes, hello: Hello, server_nonce: bytes, *, server: bool
) -> tuple[FrameMac, FrameMac]:
    """(receive, send) MACs of one side of the connection the handshake set up."""
    c2s, s2c = session_keys(secret, transcript(hello, server_nonce))
    if server:
        return FrameMac(c2s), FrameMac(s2c)
    return FrameMac(s2c), FrameMac(c2s)


def tune_socket(transport: asyncio.BaseTransport) -> None:
    """No Nagle delay; keepalive and a user timeout so that a vanished peer is noticed."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    opts: list[tuple[int, int, int]] = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    for name, value in (
        ("TCP_KEEPIDLE", 10),
        ("TCP_KEEPINTVL", 5),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 20_000),  # ms: data unacknowledged this long kills the connection
    ):
        if hasattr(socket, name):
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, opt, value in opts:
        with contextlib.suppress(OSError):  # a platform without the option
            sock.setsockopt(level, opt, value)


class FramedProtocol(asyncio.Protocol):
    """Splits the byte stream into frames and hands each to ``frame_received``.

    Frames are parsed in place: ``frame_received`` gets a memoryview of the payload that is
    valid only during the call (copy what you keep). A frame longer than ``max_frame``
    (kind byte and payload, without the tag) closes the connection with a logged reason.
    Once ``rx_mac``/``tx_mac`` are set, frames read are checked and frames written are
    tagged. ``on_writable`` is called when the transport's write buffer drains below its
    low-water mark after a pause.
    """

    frame_received: Callable[[int, memoryview], None]

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None
        self.paused = False
        self.closing = False
        self.close_reason = ""
        self.on_writable: Callable[[], None] | None = None
        self.rx_mac: FrameMac | None = None
        self.tx_mac: FrameMac | None = None
        self._buf = bytearray()
        self._drain: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not a subclass
        self.peername = transport.get_extra_info("peername")
        tune_socket(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if not self.close_reason:
            self.close_reason = f"connection lost ({exc})" if exc else "closed by peer"
        self._buf = bytearray()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionError(self.close_reason))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.on_writable is not None:
            self.on_writable()

    def eof_received(self) -> bool:
        return False  # close the transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            used = self._parse(buf)
            if used and not self.closing:  # closing: a traceback may still hold a view
                del buf[:used]
        else:
            used = self._parse(data)
            if used < len(data) and not self.closing:
                buf += memoryview(data)[used:]

    # -- framing --------------------------------------------------------------------------
    def _parse(self, data: bytes | bytearray) -> int:
        """Dispatch every complete frame in ``data``; return how many bytes were consumed."""
        end_all = len(data)
        off = 0
        view = memoryview(data)
        unpack = HEADER.unpack_from
        compare = hmac.compare_digest
        try:
            while end_all - off >= 5:
                length, kind = unpack(data, off)
                mac = self.rx_mac  # set by a handshake frame: read it for every frame
                if mac is None:
                    if length > self.max_frame or length == 0:
                        self.fail(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
                        return end_all
                    end = off + 4 + length
                    if end > end_all:
                        break
                    self.frame_received(kind, view[off + 5 : end])
                else:
                    if length > self.max_frame + TAG_BYTES or length <= TAG_BYTES:
                        self.fail(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
                        return end_all
                    end = off + 4 + length
                    if end > end_all:
                        break
                    body = end - TAG_BYTES
                    payload = view[off + 5 : body]
                    if not compare(mac.tag(kind, payload), view[body:end]):
                        self.mac_failed(mac.seq - 1, kind)
                        return end_all
                    self.frame_received(kind, payload)
                if self.closing:
                    return end_all
                off = end
        except Exception as exc:  # a bug or a misbehaving callback: never kill the loop
            log.exception("peer %s: error handling a frame", self.peername)
            self.fail(f"error handling a frame: {exc!r}")
            return end_all
        finally:
            with contextlib.suppress(BufferError):
                view.release()
        return off

    # -- writing and closing --------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write bytes (a whole frame or a batch of frames) unless closing."""
        if not self.closing and self.transport is not None:
            self.transport.write(data)

    def write_frame(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame (tagged once ``tx_mac`` is set); the payload is not copied."""
        if not self.closing and self.transport is not None:
            mac = self.tx_mac
            if mac is None:
                self.transport.writelines((HEADER.pack(len(payload) + 1, kind), payload))
            else:
                head = HEADER.pack(len(payload) + 1 + TAG_BYTES, kind)
                self.transport.writelines((head, payload, mac.tag(kind, payload)))

    def mac_failed(self, seq: int, kind: int) -> None:
        """A frame failed its MAC check: close (subclasses count it first)."""
        self.fail(f"frame {seq} (kind {kind}) failed its MAC check: closing the connection")

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark; raise if closed."""
        if self.closing:
            raise ConnectionError(self.close_reason or "closed")
        if not self.paused:
            return
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()
        await self._drain

    def fail(self, reason: str, *, level: int = logging.WARNING) -> None:
        """Close at once (discarding unsent data), logging ``reason``."""
        if self.closing:
            return
        log.log(level, "peer connection %s closed: %s", self.peername, reason)
        self.close_reason = reason
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self, reason: str) -> None:
        """Close after the buffered data is sent."""
        if self.closing:
            return
        self.close_reason = reason
        self.closing = True
        if self.transport is not None:
            self.transport.close()
