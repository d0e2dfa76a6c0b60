"""The connection caps of the HTTP port (``Gate``), and the ``Relay`` between the transport
and aiohttp's protocol for a connection the fast front handed over.

The relay passes every callback on. It also feeds what the client sends to a strict llhttp
parser of its own, only to see where each request head starts and ends, so a later head
that stays incomplete for ``http.request_head_timeout_s`` is closed (aiohttp has no such
deadline). A timer is armed only for a head that did not arrive in one piece. Once llhttp
rejects the stream (or it upgrades) the relay stops watching: aiohttp judges it alone.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httptools

from confman.api.fastpath_parse import REJECTED


class Gate:
    """The caps and deadlines shared by the connections of one server."""

    __slots__ = ("head_s", "idle_s", "max_open", "max_per_ip", "metrics", "open", "per_ip")

    def __init__(
        self, metrics: Any, max_open: int, max_per_ip: int, head_s: float, idle_s: float
    ) -> None:
        self.metrics = metrics
        self.max_open = max_open
        self.max_per_ip = max_per_ip
        self.head_s = head_s
        self.idle_s = idle_s
        self.open = 0
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """Take a place for a connection from ``ip``; False (counted) when over a cap."""
        if self.open >= self.max_open:
            self.metrics.http_refused.labels("node").inc()
            return False
        n = self.per_ip.get(ip, 0)
        if n >= self.max_per_ip:
            self.metrics.http_refused.labels("address").inc()
            return False
        self.per_ip[ip] = n + 1
        self.open += 1
        self.metrics.http_open.set(self.open)
        return True

    def release(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)
        self.open -= 1
        self.metrics.http_open.set(self.open)


class _Heads:
    """llhttp's callbacks for the relay: when a head starts and when it is complete."""

    __slots__ = ("since",)

    def __init__(self) -> None:
        #: When the head in progress started (loop time), or None between heads.
        self.since: float | None = None

    def on_message_begin(self) -> None:
        self.since = asyncio.get_running_loop().time()

    def on_headers_complete(self) -> None:
        self.since = None


class Relay(asyncio.Protocol):
    """Between the transport and aiohttp's protocol after a handover (see the module).

    A client that half-closes still gets the answer to what it sent: aiohttp is told to
    close after it (its own protocol lets the transport close at once, dropping answers
    not yet written)."""

    __slots__ = (
        "_gate",
        "_half_close",
        "_heads",
        "_inner",
        "_ip",
        "_parser",
        "_timer",
        "_transport",
    )

    def __init__(self, inner: Any, gate: Gate, ip: str) -> None:
        self._inner = inner
        self._gate = gate
        self._ip = ip
        self._half_close = False
        self._heads = _Heads()
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self._heads)
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        # TLS transports cannot stay half open
        self._half_close = transport.get_extra_info("sslcontext") is None
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is not None:
            try:
                parser.feed_data(data)
            except REJECTED:
                self._parser = None
                self._heads.since = None
            self._watch()
        self._inner.data_received(data)

    def _watch(self) -> None:
        since = self._heads.since
        if since is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(since + self._gate.head_s, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._heads.since is None or self._transport is None:
            return
        self._gate.metrics.http_timeouts.labels("head").inc()
        self._transport.close()

    def eof_received(self) -> bool | None:
        keep = self._inner.eof_received()
        waiter = getattr(self._inner, "_waiter", None)  # set while aiohttp awaits a request
        idle = waiter is not None and not waiter.done()
        if keep or idle or not self._half_close:
            return cast(bool | None, keep)
        self._inner.close()  # once the request it has is answered
        return True

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        try:
            self._inner.connection_lost(exc)
        finally:
            self._gate.release(self._ip)
