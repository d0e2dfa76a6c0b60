"""A lean HTTP/1.1 front for the hottest request: a ``local`` GET of one configuration entry.

Every connection starts here. A request of the one narrow shape this module knows is
answered directly, with the same status, headers and body the aiohttp app would send:

    GET /api/v1/namespaces/{ns}/config/{key} HTTP/1.1, no query, no body, only headers the
    route ignores (Host, User-Agent, Accept..., Content-Type, ...) besides Connection:
    keep-alive, Content-Length: 0, a valid X-Correlation-Id and the X-Api-Key of a key that
    may read the namespace; an entry that exists.

Anything else (another route or method, an error to report, CORS, conditional or
consistent reads, a malformed or oversized head) hands the connection over to aiohttp, from
the first byte of that request, for good. So aiohttp remains the one complete HTTP
implementation and the only place errors are produced; this module only recognises a
common success and renders it for a fraction of the CPU (measured: see
docs/findings/performance.md). ``tests/api/test_fastpath.py`` checks that both paths answer
alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

from confman.api.auth import VIEWER
from confman.api.context import ApiContext
from confman.api.logs import access_log
from confman.api.validation import CORRELATION_RE, NAME_RE

#: The route label of the entry route in the request metrics (its canonical path).
ENTRY_ROUTE = "/api/v1/namespaces/{ns}/config/{key}"
#: A request head longer than this is left to aiohttp (which enforces its own limits).
MAX_HEAD = 8192
#: Idle keep-alive connections are closed after this long (aiohttp's default).
IDLE_TIMEOUT_S = 3630.0
_SWEEP_S = 30.0
_PREFIX = b"GET /api/v1/namespaces/"
_SUFFIX = b" HTTP/1.1"
#: Headers the entry GET ignores (whatever their value). Anything not listed here or
#: handled in ``answer`` takes the general path.
_PLAIN = frozenset(
    {
        b"host",
        b"user-agent",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"pragma",
        b"content-type",
    }
)
_OWS = b" \t"
_MAX_KEY_BYTES = 1024  # as confman.api.auth

Handover = Callable[[], asyncio.Protocol]


class FastFront:
    """Shared by the connections of one server: the app context and what a response needs."""

    def __init__(self, ctx: ApiContext, slow: Handover) -> None:
        self.ctx = ctx
        self.slow = slow
        self.conns: set[FastConnection] = set()
        self._counter = ctx.metrics.requests.labels("GET", ENTRY_ROUTE, "200")
        self._histogram = ctx.metrics.latency.labels(ENTRY_ROUTE)
        self._server_line = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode()
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> FastConnection:
        """The protocol factory for ``loop.create_server``."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)
        return FastConnection(self)

    def close(self) -> None:
        """Close the connections still served here (not those handed to aiohttp)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.conns):
            conn.close()

    def _sweep(self) -> None:
        deadline = time.monotonic() - IDLE_TIMEOUT_S
        for conn in [c for c in self.conns if c.last_active < deadline]:
            conn.close()
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)

    def answer(self, head: bytes, peer: str | None) -> bytes | None:
        """The complete response to ``head`` (request line and headers, without the blank
        line), or None when the request is not of the fast shape."""
        start = time.perf_counter()
        lines = head.split(b"\r\n")
        line = lines[0]
        if not (line.startswith(_PREFIX) and line.endswith(_SUFFIX)):
            return None
        parts = line[len(_PREFIX) : -len(_SUFFIX)].split(b"/")
        if len(parts) != 3 or parts[1] != b"config":
            return None
        try:
            ns = parts[0].decode("ascii")
            key = parts[2].decode("ascii")
        except UnicodeDecodeError:
            return None
        # NAME_RE admits no '%', '?' or '#': encoded paths and queries go the general way.
        if not (NAME_RE.match(ns) and NAME_RE.match(key)):
            return None
        api_key: bytes | None = None
        cid: str | None = None
        for field in lines[1:]:
            name, colon, value = field.partition(b":")
            if not colon:
                return None
            name = name.lower()  # a name with spaces or obs-fold matches nothing below
            if name in _PLAIN:
                continue
            value = value.strip(_OWS)
            if name == b"x-api-key" and api_key is None:
                api_key = value
            elif (name == b"connection" and value.lower() == b"keep-alive") or (
                name == b"content-length" and value == b"0"
            ):
                continue
            elif name == b"x-correlation-id" and cid is None:
                try:
                    cid = value.decode("ascii")
                except UnicodeDecodeError:
                    return None
                if not CORRELATION_RE.match(cid):
                    return None
            else:
                return None
        if not api_key or len(api_key) > _MAX_KEY_BYTES:
            return None
        ctx = self.ctx
        principal = ctx.keys.lookup_raw(api_key)
        if principal is None or principal.level < VIEWER or not principal.may_access(ns):
            return None
        rt = ctx.rt
        reader = rt.reader
        if reader is None:
            return None
        found = reader.get_entry_and_index(ns, key)
        if found is None:
            return None
        item, index = found
        body = orjson.dumps(item)
        if cid is None:
            cid = os.urandom(16).hex()
        response = b"".join(
            (
                b"HTTP/1.1 200 OK\r\nX-Confman-Index: ",
                (
                    f"{index}\r\nX-Confman-Role: {rt.role}\r\n"
                    f"X-Confman-Last-Contact-Ms: {rt.last_contact_ms()}\r\n"
                    f'ETag: "{item["version"]}"\r\nContent-Type: application/json\r\n'
                    f"X-Correlation-Id: {cid}\r\nContent-Length: {len(body)}\r\n"
                    f"Date: {rfc822_formatted_time()}\r\n"
                ).encode(),
                self._server_line,
                body,
            )
        )
        self._counter.inc()
        elapsed = time.perf_counter() - start
        self._histogram.observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            path = line[4 : -len(_SUFFIX)].decode("ascii")
            access_log.info(
                "%s %s %d",
                "GET",
                path,
                200,
                extra={
                    "fields": {
                        "method": "GET",
                        "path": path,
                        "status": 200,
                        "durationMs": round(elapsed * 1000, 3),
                        "actor": principal.name,
                        "remote": peer,
                        "correlationId": cid,
                    }
                },
            )
        return response


class FastConnection(asyncio.Protocol):
    """One client connection, until it sends a request of another shape."""

    __slots__ = ("_buf", "_front", "_paused", "_peer", "_transport", "last_active")

    def __init__(self, front: FastFront) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._peer: str | None = None
        self._paused = False
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        self._front.conns.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._front.conns.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        buf = self._buf + data if self._buf else data
        answer = self._front.answer
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._hand_over(buf)
                    return
                break
            response = answer(buf[:end], self._peer) if end <= MAX_HEAD else None
            if response is None:
                self._hand_over(buf)
                return
            assert self._transport is not None
            self._transport.write(response)
            buf = buf[end + 4 :]
        self._buf = buf

    def eof_received(self) -> bool:
        return False  # close

    def pause_writing(self) -> None:
        # The client does not read its responses: stop reading its requests meanwhile.
        if self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._paused:
            self._paused = False
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _hand_over(self, pending: bytes) -> None:
        """Give the connection, and the bytes of the request not answered here, to aiohttp."""
        transport = self._transport
        assert transport is not None
        self._front.conns.discard(self)
        self._transport = None
        self._buf = b""
        if self._paused:
            transport.resume_reading()
        slow: Any = self._front.slow()
        transport.set_protocol(slow)
        slow.connection_made(transport)
        if pending:
            slow.data_received(pending)
