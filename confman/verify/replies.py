"""One request of the verify workload and what it came to: `send`, `Reply`, and the
recording rules `write_outcome` and `read_outcome` (see ``confman.verify.workload``).

`send` follows ``307``/``308`` redirects with method and body kept, all hops inside one
timeout, and never raises for network trouble; `make_session` makes the client session it
needs (one attempt per request, and a note of whether the request ever had a connection).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

from confman.verify.history import Status

__all__ = [
    "DEFINITE_503",
    "DOCUMENTED_5XX",
    "MAX_REDIRECTS",
    "Reply",
    "make_session",
    "read_outcome",
    "send",
    "write_outcome",
]

#: Documented 5xx answers (docs/api.md): anything else with a 5xx status is counted as unexpected.
DOCUMENTED_5XX = frozenset({503, 504})
#: 503 titles the runtime raises only when the write was definitely not committed.
DEFINITE_503 = frozenset({"No leader available", "Write not committed"})
MAX_REDIRECTS = 4


# ------------------------------------------------------------------------------ replies
@dataclass(slots=True)
class Reply:
    """What one request (with its redirects) came to."""

    status: int
    """HTTP status of the last answer; 0 when none came (see `error`)."""
    title: str | None = None
    """The problem title of an error answer."""
    body: Any = None
    node: str = ""
    """Base URL of the node that gave the last answer (or was last tried)."""
    error: str | None = None
    """``timeout``, ``connection`` or ``redirects`` when there is no usable answer."""
    hops: int = 0


def write_outcome(kind: str, reply: Reply) -> tuple[Status, Any]:
    """(status, output) to record for a ``write``, ``cas`` or ``delete`` that got ``reply``."""
    s = reply.status
    if reply.error in ("redirects", "refused"):
        return "fail", None  # redirects only, or never sent: nothing was proposed anywhere
    if s == 0:
        return "info", None
    if 200 <= s < 300:
        if kind == "delete":
            return "ok", True
        version = reply.body.get("version") if isinstance(reply.body, dict) else None
        if not isinstance(version, int):
            return "info", None  # a 2xx without a version: unexpected (counted as anomaly)
        return "ok", version
    if s == 412 and kind == "cas":
        return "ok", False
    if s == 404 and kind == "delete" and reply.title == "Configuration not found":
        return "ok", False
    if s == 503 and reply.title in DEFINITE_503:
        return "fail", None
    if 400 <= s < 500 and s != 404:
        return "fail", None
    return "info", None


def read_outcome(reply: Reply) -> tuple[Status, Any]:
    """(status, output) to record for a ``read`` that got ``reply``."""
    if reply.status == 200 and isinstance(reply.body, dict):
        value, version = reply.body.get("value"), reply.body.get("version")
        if isinstance(value, str) and isinstance(version, int):
            return "ok", (value, version)
        return "info", None
    if reply.status == 404 and reply.title == "Configuration not found":
        return "ok", None
    if reply.status == 0 and reply.error in ("timeout", "connection"):
        return "info", None
    return "fail", None


# ------------------------------------------------------------------------------ HTTP
async def _traced(_session: Any, ctx: Any, _params: Any) -> None:
    if isinstance(ctx.trace_request_ctx, dict):
        ctx.trace_request_ctx["traced"] = True


async def _connected(_session: Any, ctx: Any, _params: Any) -> None:
    if isinstance(ctx.trace_request_ctx, dict):
        ctx.trace_request_ctx["connected"] = True


def make_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A client session that sends each request once, and notes when it got a connection.

    aiohttp silently resends a PUT or DELETE when the connection breaks (RFC 9112 retry of
    idempotent methods): one recorded operation would then be two attempts, and a refusal
    of the resend would hide that the first may have been applied. The resend is switched
    off (a private switch; tests/verify/test_workload.py checks it still works), and `send`
    calls a refused connection definite only when its request never had a connection.
    """
    tc = aiohttp.TraceConfig()
    tc.on_request_start.append(_traced)
    tc.on_connection_create_end.append(_connected)
    tc.on_connection_reuseconn.append(_connected)
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(connector=connector, trace_configs=[tc], **kwargs)
    session._retry_connection = False
    return session


async def send(
    session: aiohttp.ClientSession,
    method: str,
    base: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    timeout: float = 2.0,
    max_redirects: int = MAX_REDIRECTS,
) -> Reply:
    """One request to ``base + path``, following ``307``/``308`` with method and body kept;
    the whole chain within ``timeout``. Never raises for network trouble. The session should
    come from `make_session` (otherwise a refused connection counts as indeterminate)."""
    url = urljoin(base, path.lstrip("/"))
    node = base
    hops = 0
    trace: dict[str, bool] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                trace = {}
                async with session.request(
                    method,
                    url,
                    headers=headers,
                    json=json_body,
                    allow_redirects=False,
                    trace_request_ctx=trace,
                ) as resp:
                    status = resp.status
                    if status in (307, 308) and "Location" in resp.headers:
                        if hops >= max_redirects:
                            return Reply(status, None, None, node, "redirects", hops)
                        hops += 1
                        url = urljoin(url, resp.headers["Location"])
                        node = urljoin(url, "/")
                        continue
                    body: Any = None
                    if resp.content_type in ("application/json", "application/problem+json"):
                        try:
                            body = await resp.json(content_type=None)
                        except ValueError:
                            body = None
                    else:
                        await resp.read()
                    title = body.get("title") if isinstance(body, dict) and status >= 400 else None
                    return Reply(status, title, body, node, None, hops)
    except TimeoutError:
        return Reply(0, None, None, node, "timeout", hops)
    except aiohttp.ClientConnectorError:
        never_sent = trace.get("traced", False) and not trace.get("connected", False)
        return Reply(0, None, None, node, "refused" if never_sent else "connection", hops)
    except (aiohttp.ClientError, OSError):
        return Reply(0, None, None, node, "connection", hops)
