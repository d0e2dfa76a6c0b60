"""The dialling side of a peer connection: `dial`, and `Outbound`, the connection it makes.

`dial` connects (through TLS, if on), runs the client half of the handshake of
``confman.node.framing`` and hands back an `Outbound` ready to carry tagged frames: Raft
messages on a ``CH_RAFT`` link (written by ``confman.node.peer_queue``), or one snapshot
stream on a ``CH_SNAPSHOT`` link (``confman.node.peer_snapshot``), whose only inbound frame
is the receiver's verdict (``ack``). A server that fails its proof is counted as refused
(``auth``), as is a failed TLS handshake (``tls``) and a frame that fails its MAC (``mac``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
from typing import Any

from confman.node.framing import (
    CH_SNAPSHOT,
    HANDSHAKE_MAX_FRAME,
    K_AUTH,
    K_CHALLENGE,
    K_HELLO,
    K_SNAP_ACK,
    K_WELCOME,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FramedProtocol,
    HandshakeError,
    Hello,
    encode_hello,
    new_nonce,
    proof,
    session_macs,
)
from confman.node.peer_link import Addr, LinkContext

__all__ = ["WRITE_HIGH_WATER", "Outbound", "dial"]

WRITE_HIGH_WATER = 4 << 20


def _settle(fut: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` if still pending, without a 'never retrieved' warning if nobody waits."""
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()


class Outbound(FramedProtocol):
    """A connection we dialled: client side of the handshake, then a writer."""

    def __init__(self, link: LinkContext, peer_id: str, channel: int) -> None:
        super().__init__(HANDSHAKE_MAX_FRAME)
        self.link = link
        self.peer_id = peer_id
        self.channel = channel
        self.hello = Hello(PROTOCOL_VERSION, channel, link.node_id, peer_id, new_nonce())
        self.server_nonce: bytes | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ack: asyncio.Future[bool] = loop.create_future()
        self.intentional = False  # closed on purpose: reconnect without reporting a failure
        self.frame_received = self._handshake_frame

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.link.conns.add(self)
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.write_frame(K_HELLO, encode_hello(self.hello))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.link.conns.discard(self)
        _settle(self.ready, ConnectionError(self.close_reason))
        if not self.ack.done():
            self.ack.set_result(False)

    def _reject(self, reason: str) -> None:
        self.fail(reason)
        _settle(self.ready, HandshakeError(reason))

    def _handshake_frame(self, kind: int, payload: memoryview) -> None:
        if kind == K_CHALLENGE and self.server_nonce is None and len(payload) == NONCE_BYTES:
            self.server_nonce = bytes(payload)
            auth = proof(self.link.secret, b"client", self.hello, self.server_nonce)
            self.write_frame(K_AUTH, auth)
        elif kind == K_WELCOME and self.server_nonce is not None:
            secret = self.link.secret
            expected = proof(secret, b"server", self.hello, self.server_nonce)
            if not hmac.compare_digest(expected, bytes(payload)):
                self.link.refused("auth")
                self._reject(f"{self.peer_id} failed authentication (wrong cluster secret?)")
                return
            self.rx_mac, self.tx_mac = session_macs(
                secret, self.hello, self.server_nonce, server=False
            )
            self.max_frame = self.link.max_frame
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
        self.link.refused("mac")
        super().mac_failed(seq, kind)


async def dial(
    link: LinkContext,
    addr: Addr,
    channel: int,
    peer_id: str,
    *,
    tls: ssl.SSLContext | None,
    timeout: float,
) -> Outbound:
    """Connect and complete the handshake within ``timeout``, or raise an OSError."""
    loop = asyncio.get_running_loop()
    made: list[Outbound] = []

    def factory() -> Outbound:
        made.append(Outbound(link, peer_id, channel))
        return made[-1]

    try:
        async with asyncio.timeout(timeout):
            if tls is None:
                await loop.create_connection(factory, addr[0], addr[1])
            else:
                await loop.create_connection(
                    factory,
                    addr[0],
                    addr[1],
                    ssl=tls,
                    ssl_handshake_timeout=timeout,
                )
            await made[-1].ready
    except BaseException as exc:
        for conn in made:
            conn.fail("dial abandoned", level=logging.DEBUG)
        if isinstance(exc, ssl.SSLError):
            link.refused("tls")
        raise
    return made[-1]
