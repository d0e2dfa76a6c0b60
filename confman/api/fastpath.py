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

Heads are parsed by llhttp in its strict mode (``fastpath_parse``), never split by hand.
Anything else (another route or method, an error to report, CORS, conditional or
consistent reads, a head llhttp rejects, duplicate Host, X-Api-Key, Content-Type or
Connection headers, a missing Host, Transfer-Encoding of any kind, an oversized head) hands
the connection over to aiohttp, from the first byte of that request, for good. So aiohttp
remains the one complete HTTP implementation and the only place errors are produced; this
module only recognises a common success and renders it for a fraction of the CPU
(measured: see docs/findings/performance.md). The connections themselves (backpressure,
deadlines, caps) are ``fastpath_conn``'s. ``tests/api/test_fastpath*.py`` check that both
paths answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE

from confman.api.access import DevHosts
from confman.api.auth import EDITOR, MAX_KEY_BYTES, VIEWER
from confman.api.context import ApiContext
from confman.api.fastpath_conn import FastConnection
from confman.api.fastpath_gate import Gate
from confman.api.fastpath_parse import FastHead, RawHead
from confman.api.logs import access_log, error_log
from confman.api.problems import Problem, Redirect
from confman.api.responses import etag, read_headers
from confman.api.routes_config import ENTRY_ROUTE, put_answer, put_fields
from confman.api.validation import CORRELATION_RE, NAME_RE, parse_object
from confman.api.writes import propose_at
from confman.node.state.commands import PutConfig

_PREFIX = b"/api/v1/namespaces/"
#: Headers the entry routes ignore (whatever their value llhttp accepts), and which
#: aiohttp accepts repeated. Anything not listed here or handled in ``_parse`` (Host and
#: User-Agent once, as aiohttp rejects them repeated) takes the general path.
_PLAIN = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"pragma",
    }
)

Handover = Callable[[], asyncio.Protocol]


class FastFront:
    """Shared by the connections of one server: the app context and what a response needs,
    the connection caps and deadlines (``gate``)."""

    def __init__(self, ctx: ApiContext, slow: Handover, answering: bool = True) -> None:
        self.ctx = ctx
        self.slow = slow
        #: False (``http.fast_path = false``): every request goes to aiohttp, but the
        #: connections still pass the gate and their first head its deadline here.
        self.answering = answering
        cfg = ctx.rt.cfg
        self.gate = Gate(
            ctx.rt.metrics,
            cfg.http_max_connections,
            cfg.http_max_connections_per_ip,
            cfg.http_request_head_timeout_s,
            cfg.http_keepalive_timeout_s,
        )
        #: The dev profile answers only Hosts naming this node (aiohttp answers the rest 421),
        #: on the port and scheme ``serve`` sets here.
        self._dev_hosts = DevHosts(cfg) if cfg.profile == "dev" else None
        self.local_port: int | None = None
        self.secure = False
        self.conns: set[FastConnection] = set()
        #: Requests answered here (not by aiohttp), for tests and probes.
        self.answered = 0
        self._counters: dict[tuple[str, int], Any] = {}
        self._histogram = ctx.metrics.latency.labels(ENTRY_ROUTE)
        self._server_line = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode()
        #: Set by ``shutdown``: no further request is answered here.
        self.closing = False

    def protocol(self) -> FastConnection:
        """The protocol factory for ``loop.create_server``."""
        return FastConnection(self)

    @property
    def open_count(self) -> int:
        """Open connections, fast or handed to aiohttp."""
        return self.gate.open

    def open_from(self, ip: str) -> int:
        return self.gate.per_ip.get(ip, 0)

    async def shutdown(self, timeout: float) -> None:
        """Close the connections still served here (not those handed to aiohttp); those
        with a write in progress once it is answered, waiting at most ``timeout``."""
        self.closing = True
        busy = [c.busy for c in self.conns if c.busy is not None]
        for conn in list(self.conns):
            if conn.busy is None:
                conn.close()
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for conn in list(self.conns):
            conn.close()

    def _parse(self, raw: RawHead, method: bytes, level: int) -> FastHead | None:
        """The head's fields when it has the fast shape and a key of ``level`` for the
        namespace, else None."""
        url = raw.url
        if raw.method != method or not url.startswith(_PREFIX):
            return None
        parts = url[len(_PREFIX) :].split(b"/")
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
        length: int | None = None
        host: bytes | None = None
        connections = agents = 0
        for name, value in raw.fields:
            if name in _PLAIN:
                continue
            if name == b"host" and host is None and value:
                host = value
            elif name == b"user-agent" and not agents:
                agents = 1
            elif name == b"x-api-key" and api_key is None:
                api_key = value
            elif name == b"connection" and not connections and value.lower() == b"keep-alive":
                connections = 1
            elif name == b"content-length" and length is None and value.isdigit():
                length = int(value)
            elif name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"x-correlation-id" and cid is None:
                try:
                    cid = value.decode("ascii")
                except UnicodeDecodeError:
                    return None
                if not CORRELATION_RE.match(cid):
                    return None
            else:
                return None  # unknown, repeated or odd: aiohttp's
        if host is None or not api_key or len(api_key) > MAX_KEY_BYTES:
            return None
        dev = self._dev_hosts
        if dev is not None and not dev.allows(host.decode("latin-1"), self.local_port, self.secure):
            return None
        principal = self.ctx.keys.lookup_raw(api_key)
        if principal is None or principal.level < level or not principal.may_access(ns):
            return None
        path = url.decode("ascii")
        return FastHead(path, ns, key, principal, cid, content_type, length or 0)

    def answer(self, raw: RawHead, peer: str | None) -> bytes | None:
        """The complete response to a GET head, or None when the request is not of the
        fast shape."""
        start = time.perf_counter()
        h = self._parse(raw, b"GET", VIEWER)
        if h is None or h.length or not raw.complete:
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

    def write_head(self, raw: RawHead) -> FastHead | None:
        """The fields of a PUT head of the fast shape (its body still to come)."""
        ctx = self.ctx
        if ctx.forward_writes or ctx.rt.role != "leader":
            return None  # a redirect, or a forwarded write: aiohttp's
        h = self._parse(raw, b"PUT", EDITOR)
        if (
            h is None
            or raw.complete
            or h.content_type != b"application/json"
            or not 0 < h.length <= ctx.max_body
        ):
            return None
        return h

    def start_write(self, h: FastHead, body: bytes, peer: str | None) -> asyncio.Task[bytes] | None:
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

    async def _write(
        self, h: FastHead, command: PutConfig, start: float, peer: str | None
    ) -> bytes:
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
        self, method: str, status: int, h: FastHead, cid: str, peer: str | None, start: float
    ) -> None:
        counter = self._counters.get((method, status))
        if counter is None:
            counter = self.ctx.metrics.requests.labels(method, ENTRY_ROUTE, str(status))
            self._counters[(method, status)] = counter
        counter.inc()
        self.answered += 1
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
