"""A lean HTTP/1.1 front for the two hottest requests: a ``local`` GET and a plain PUT of
one configuration entry.

Every connection starts here. A request of the narrow shapes this module knows is answered
directly, with the same status, headers and body the aiohttp app would send:

    GET /api/v1/namespaces/{ns}/config/{key} HTTP/1.1, no query, no body, only headers the
    route ignores (Host, User-Agent, Accept..., Content-Type, ...) besides Connection:
    keep-alive, Content-Length: 0, a valid X-Correlation-Id and the X-Api-Key of a key that
    may read the namespace; an entry that exists.

    PUT of the same path, on the leader, with the same kind of headers, a Content-Type of
    exactly application/json, a Content-Length and a body that is valid for the route; no
    If-Match, If-None-Match, Idempotency-Key or query, and write forwarding off. Its body is
    validated and its outcome mapped by the very functions the aiohttp route uses
    (``put_fields``, ``propose_at``, ``put_answer``); only the HTTP around them is lean.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

from confman.api.auth import EDITOR, MAX_KEY_BYTES, VIEWER, Principal
from confman.api.context import ApiContext
from confman.api.logs import access_log, error_log
from confman.api.problems import Problem, Redirect
from confman.api.responses import etag, read_headers
from confman.api.routes_config import ENTRY_ROUTE, put_answer, put_fields
from confman.api.validation import CORRELATION_RE, NAME_RE, parse_object
from confman.api.writes import propose_at
from confman.node.state.commands import PutConfig

#: A request head longer than this is left to aiohttp (which enforces its own limits).
MAX_HEAD = 8192
#: Idle keep-alive connections are closed after this long (aiohttp's default).
IDLE_TIMEOUT_S = 3630.0
_SWEEP_S = 30.0
_PREFIX = b"GET /api/v1/namespaces/"
_PUT_PREFIX = b"PUT /api/v1/namespaces/"
_SUFFIX = b" HTTP/1.1"
#: Bytes a client may send ahead while its write is in progress before reading pauses.
_MAX_AHEAD = 1 << 16
#: Headers the entry routes ignore (whatever their value). Anything not listed here or
#: handled in ``_parse`` takes the general path.
_PLAIN = frozenset(
    {
        b"host",
        b"user-agent",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"pragma",
    }
)
_OWS = b" \t"

Handover = Callable[[], asyncio.Protocol]


@dataclass(slots=True)
class _Head:
    """What the fast path needs from a request head of its shape."""

    path: str
    ns: str
    key: str
    principal: Principal
    cid: str | None
    content_type: bytes | None  # None: absent or given twice
    length: int  # Content-Length (0 when absent)


class FastFront:
    """Shared by the connections of one server: the app context and what a response needs."""

    def __init__(self, ctx: ApiContext, slow: Handover) -> None:
        self.ctx = ctx
        self.slow = slow
        self.conns: set[FastConnection] = set()
        self._counters: dict[tuple[str, int], Any] = {}
        self._histogram = ctx.metrics.latency.labels(ENTRY_ROUTE)
        self._server_line = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode()
        self._sweeper: asyncio.TimerHandle | None = None
        #: Set by ``shutdown``: no further request is answered here.
        self.closing = False

    def protocol(self) -> FastConnection:
        """The protocol factory for ``loop.create_server``."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)
        return FastConnection(self)

    async def shutdown(self, timeout: float) -> None:
        """Close the connections still served here (not those handed to aiohttp); those
        with a write in progress once it is answered, waiting at most ``timeout``."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        busy = [c.busy for c in self.conns if c.busy is not None]
        for conn in list(self.conns):
            if conn.busy is None:
                conn.close()
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for conn in list(self.conns):
            conn.close()

    def _sweep(self) -> None:
        deadline = time.monotonic() - IDLE_TIMEOUT_S
        for conn in [c for c in self.conns if c.last_active < deadline and c.busy is None]:
            conn.close()
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_S, self._sweep)

    def _parse(self, lines: list[bytes], prefix: bytes, level: int) -> _Head | None:
        """The head's fields when it has the fast shape and a key of ``level`` for the
        namespace, else None."""
        line = lines[0]
        if not (line.startswith(prefix) and line.endswith(_SUFFIX)):
            return None
        parts = line[len(prefix) : -len(_SUFFIX)].split(b"/")
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
        content_type: bytes | None = None
        types = 0
        length: int | None = None
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
            elif name == b"connection" and value.lower() == b"keep-alive":
                continue
            elif name == b"content-length" and length is None and value.isdigit():
                length = int(value)
            elif name == b"content-type":
                content_type = value
                types += 1
            elif name == b"x-correlation-id" and cid is None:
                try:
                    cid = value.decode("ascii")
                except UnicodeDecodeError:
                    return None
                if not CORRELATION_RE.match(cid):
                    return None
            else:
                return None
        if not api_key or len(api_key) > MAX_KEY_BYTES:
            return None
        principal = self.ctx.keys.lookup_raw(api_key)
        if principal is None or principal.level < level or not principal.may_access(ns):
            return None
        path = line[4 : -len(_SUFFIX)].decode("ascii")
        if types > 1:
            content_type = None
        return _Head(path, ns, key, principal, cid, content_type, length or 0)

    def answer(self, head: bytes, peer: str | None) -> bytes | None:
        """The complete response to a GET ``head`` (request line and headers, without the
        blank line), or None when the request is not of the fast shape."""
        start = time.perf_counter()
        h = self._parse(head.split(b"\r\n"), _PREFIX, VIEWER)
        if h is None or h.length:
            return None
        rt = self.ctx.rt
        reader = rt.reader
        if reader is None:
            return None
        found = reader.get_entry_and_index(h.ns, h.key)
        if found is None:
            return None
        item, index = found
        headers = read_headers(rt, index)  # as the aiohttp route, in its order
        headers["ETag"] = etag(item["version"])
        headers["Content-Type"] = "application/json"
        cid = h.cid or os.urandom(16).hex()
        response = self._frame("200 OK", headers.items(), cid, orjson.dumps(item))
        self._record("GET", 200, h, cid, peer, start)
        return response

    def write_head(self, head: bytes) -> _Head | None:
        """The fields of a PUT ``head`` of the fast shape (its body still to come)."""
        ctx = self.ctx
        if ctx.forward_writes or ctx.rt.role != "leader":
            return None  # a redirect, or a forwarded write: aiohttp's
        h = self._parse(head.split(b"\r\n"), _PUT_PREFIX, EDITOR)
        if h is None or h.content_type != b"application/json" or not 0 < h.length <= ctx.max_body:
            return None
        return h

    def start_write(self, h: _Head, body: bytes, peer: str | None) -> asyncio.Task[bytes] | None:
        """Propose the PUT of ``body``; None (nothing proposed) when the body is not valid
        for the route or this node no longer leads: the general path then reports it."""
        start = time.perf_counter()
        if self.ctx.rt.role != "leader":
            return None
        try:
            fields = put_fields(parse_object(body), False)
        except Problem:
            return None
        command = PutConfig(
            namespace=h.ns, key=h.key, expected_version=None, must_exist=False, **fields
        )
        return asyncio.get_running_loop().create_task(self._write(h, command, start, peer))

    async def _write(self, h: _Head, command: PutConfig, start: float, peer: str | None) -> bytes:
        cid = h.cid or os.urandom(16).hex()
        resp: web.Response
        try:
            result = await propose_at(h.path, self.ctx, h.principal, command, None)
            resp = put_answer(result, h.ns, h.key)
        except Problem as p:
            resp = p.response(h.path, cid)
        except Redirect as r:
            resp = r.response()
        except Exception:  # as the app's middleware does
            error_log.exception(
                "unhandled error in PUT %s", h.path, extra={"fields": {"correlationId": cid}}
            )
            problem = Problem(500, detail=f"An unexpected error occurred; quote traceId {cid}")
            resp = problem.response(h.path, cid)
        self._record("PUT", resp.status, h, cid, peer, start)
        return self.render(resp, cid)

    def render(self, resp: web.Response, cid: str) -> bytes:
        """``resp`` as aiohttp sends it to an HTTP/1.1 keep-alive request, with the
        correlation id the app's middleware adds. Only for responses that keep the
        connection open (every outcome of a PUT does; a forced close is a 413's)."""
        body = resp.body
        assert body is None or isinstance(body, bytes)
        return self._frame(f"{resp.status} {resp.reason}", resp.headers.items(), cid, body or b"")

    def _frame(
        self, status: str, headers: Iterable[tuple[str, str]], cid: str, body: bytes
    ) -> bytes:
        """A response with the headers the app's middleware (the correlation id) and aiohttp
        (length, date, server) add after the handler's, in their order."""
        fields = "".join(f"{k}: {v}\r\n" for k, v in headers)
        return b"".join(
            (
                (
                    f"HTTP/1.1 {status}\r\n{fields}X-Correlation-Id: {cid}\r\n"
                    f"Content-Length: {len(body)}\r\nDate: {rfc822_formatted_time()}\r\n"
                ).encode(),
                self._server_line,
                body,
            )
        )

    def _record(
        self, method: str, status: int, h: _Head, cid: str, peer: str | None, start: float
    ) -> None:
        counter = self._counters.get((method, status))
        if counter is None:
            counter = self.ctx.metrics.requests.labels(method, ENTRY_ROUTE, str(status))
            self._counters[(method, status)] = counter
        counter.inc()
        elapsed = time.perf_counter() - start
        self._histogram.observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d",
                method,
                h.path,
                status,
                extra={
                    "fields": {
                        "method": method,
                        "path": h.path,
                        "status": status,
                        "durationMs": round(elapsed * 1000, 3),
                        "actor": h.principal.name,
                        "remote": peer,
                        "correlationId": cid,
                    }
                },
            )


class FastConnection(asyncio.Protocol):
    """One client connection, until it sends a request of another shape."""

    __slots__ = (
        "_buf",
        "_eof",
        "_front",
        "_peer",
        "_read_paused",
        "_transport",
        "_write_paused",
        "busy",
        "last_active",
    )

    def __init__(self, front: FastFront) -> None:
        self._front = front
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._peer: str | None = None
        self._write_paused = False
        self._read_paused = False
        self._eof = False
        #: The write in progress; requests after it wait (responses keep their order).
        self.busy: asyncio.Task[bytes] | None = None
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
        self._buf = self._buf + data if self._buf else data
        if self.busy is None:
            self._serve()
        self._flow()

    def _serve(self) -> None:
        """Answer the complete requests buffered, until one must wait or go elsewhere."""
        front = self._front
        buf = self._buf
        while buf and not front.closing:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._hand_over(buf)
                    return
                break
            if end > MAX_HEAD:
                self._hand_over(buf)
                return
            if buf.startswith(b"PUT "):
                h = front.write_head(buf[:end])
                if h is None:
                    self._hand_over(buf)
                    return
                total = end + 4 + h.length
                if len(buf) < total:
                    break  # the body is still on its way
                task = front.start_write(h, buf[end + 4 : total], self._peer)
                if task is None:
                    self._hand_over(buf)
                    return
                self._buf = buf[total:]
                self.busy = task
                task.add_done_callback(self._written)
                return
            response = front.answer(buf[:end], self._peer)
            if response is None:
                self._hand_over(buf)
                return
            assert self._transport is not None
            self._transport.write(response)
            buf = buf[end + 4 :]
        self._buf = buf

    def _written(self, task: asyncio.Task[bytes]) -> None:
        self.busy = None
        if self._transport is None or task.cancelled():
            return  # the client went away meanwhile
        self._transport.write(task.result())
        if self._front.closing or self._eof:
            self.close()
            return
        self._serve()
        self._flow()

    def _flow(self) -> None:
        """Read while the client reads its answers and has not run too far ahead."""
        transport = self._transport
        if transport is None:
            return
        pause = self._write_paused or (self.busy is not None and len(self._buf) > _MAX_AHEAD)
        if pause and not self._read_paused:
            transport.pause_reading()
        elif self._read_paused and not pause:
            transport.resume_reading()
        self._read_paused = pause

    def eof_received(self) -> bool:
        self._eof = True
        return self.busy is not None  # keep the transport open to answer the write

    def pause_writing(self) -> None:
        self._write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._flow()

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
        if self._read_paused:
            transport.resume_reading()
        slow: Any = self._front.slow()
        transport.set_protocol(slow)
        slow.connection_made(transport)
        if pending:
            slow.data_received(pending)
