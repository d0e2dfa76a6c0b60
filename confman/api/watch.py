"""``GET /api/v1/watch``: the committed changes after a log index, as Server-Sent Events
(``Accept: text/event-stream``) or as a long poll (``?wait=30s``).

Events are ``{"type","namespace","key","value","version","index"}`` in log order. SSE:
``id:`` is the log index and is sent on the last event of each index (one index can carry
several events, e.g. a namespace deletion), so ``Last-Event-ID`` always names a complete
index; ``event: progress`` (``id:`` = index) opens the stream and repeats every
``heartbeat`` while nothing matches, so a resumed watch need not rescan; history compacted
under a slow stream ends it with ``event: compacted`` (a 410 problem as data).

Limits (``[watch]`` settings): open watches per node (``max_subscribers``) and per watched
target (``max_per_key``: one key, prefix, namespace or every namespace) answer ``503 Too
many watches`` with ``Retry-After``, counted in ``confman_watch_refused{reason}``; a page
(a long-poll answer, a stream batch) holds at most ``PAGE`` changes and about
``page_bytes`` (whole log indexes; one index larger than that is sent alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from confman.api import cors
from confman.api.access import caller
from confman.api.auth import VIEWER, Principal, require_namespace
from confman.api.changes import ChangeHub
from confman.api.context import ApiContext
from confman.api.logs import CORRELATION_ID
from confman.api.problems import Problem, bad_request
from confman.api.responses import json_response, read_headers
from confman.api.validation import check_name, duration_param, int_param
from confman.node.config import NodeConfig
from confman.node.state.queries import ChangeFilter, ChangePage, HistoryCompacted

WATCH = "/api/v1/watch"
#: Longest long poll (``wait``) and the bounds of the SSE heartbeat.
MAX_WAIT_S = 600.0
HEARTBEAT_S = (1.0, 300.0)
DEFAULT_HEARTBEAT_S = 5.0
#: Changes read per query (an index is never split, so a page can be a little longer).
PAGE = 500
#: SSE reconnection delay suggested to EventSource clients, in milliseconds.
RETRY_MS = 1000
#: ``Retry-After`` of a watch refused because the node or its target is full, in seconds.
FULL_RETRY_AFTER_S = 5
_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")


@dataclass(frozen=True, slots=True)
class WatchQuery:
    """A parsed watch request."""

    flt: ChangeFilter
    since: int | None  # None: from now
    wait_s: float
    heartbeat_s: float
    stream: bool


def _since(request: web.Request) -> int | None:
    last = request.headers.get("Last-Event-ID")  # an EventSource resuming wins over ?since
    if last is not None and last.strip():
        return int_param(last, "Last-Event-ID", minimum=0)
    raw = request.query.get("since")
    return None if raw is None else int_param(raw, "since", minimum=0)


def parse_query(request: web.Request, principal: Principal) -> WatchQuery:
    """The filter, start and timing of a watch; 400/403 for what is wrong."""
    q = request.query
    ns, key, prefix = q.get("namespace"), q.get("key"), q.get("prefix")
    if ns is not None:
        check_name(ns, "namespace")
        require_namespace(principal, ns)
    if key is not None and prefix is not None:
        raise bad_request("prefix", "use either key or prefix, not both")
    if ns is None and (key is not None or prefix is not None):
        raise bad_request("namespace", "required with key or prefix")
    if key is not None:
        check_name(key, "key")
    if prefix is not None and not _PREFIX_RE.match(prefix):
        raise bad_request("prefix", "must be 1-128 characters of A-Z a-z 0-9 . _ -")
    stream = "text/event-stream" in request.headers.get("Accept", "")
    raw_wait, raw_beat = q.get("wait"), q.get("heartbeat")
    wait = 0.0 if raw_wait is None else duration_param(raw_wait, "wait", low=0, high=MAX_WAIT_S)
    beat = (
        DEFAULT_HEARTBEAT_S
        if raw_beat is None
        else duration_param(raw_beat, "heartbeat", low=HEARTBEAT_S[0], high=HEARTBEAT_S[1])
    )
    flt = ChangeFilter(ns, key, prefix, principal.grants)
    return WatchQuery(flt, _since(request), wait, beat, stream)


def compacted(exc: HistoryCompacted) -> Problem:
    """410: the history the watch asks for is gone; list again and watch from there."""
    return Problem(
        410,
        "History compacted",
        f"Changes after index {exc.since} are no longer retained (history is kept after "
        f"index {exc.floor}): list the current state and watch from its X-Confman-Index",
        slug="history-compacted",
        headers={"X-Confman-Compacted-Index": str(exc.floor)},
    )


def _state_unavailable() -> Problem:
    return Problem(
        503,
        "State unavailable",
        "A snapshot is being installed; retry shortly",
        slug="state-unavailable",
        headers={"Retry-After": "1"},
    )


def _page(ctx: ApiContext, since: int | None, flt: ChangeFilter) -> ChangePage | None:
    """The next page after ``since`` (None: from the applied index), bounded in count and
    bytes; None without state."""
    reader = ctx.rt.reader
    if reader is None:
        return None
    start = reader.applied_index() if since is None else since
    page = reader.watch(start, flt, PAGE, ctx.rt.cfg.watch_page_bytes)
    if page.cut_by_bytes:
        ctx.rt.metrics.watch_pages_cut.inc()
    return page


def _target(flt: ChangeFilter) -> str:
    """What a watch watches, in words (the key of the per-target limit)."""
    if flt.namespace is None:
        return "every namespace"
    if flt.key is not None:
        return f"namespace {flt.namespace!r} key {flt.key!r}"
    if flt.prefix:
        return f"namespace {flt.namespace!r} prefix {flt.prefix!r}"
    return f"namespace {flt.namespace!r}"


def _full(detail: str) -> Problem:
    return Problem(
        503,
        "Too many watches",
        f"{detail}; retry later or watch a wider target with one connection",
        slug="too-many-watches",
        headers={"Retry-After": str(FULL_RETRY_AFTER_S)},
    )


class WatchSlots:
    """The open watches of one app: per node and per target (``[watch]`` limits)."""

    def __init__(self) -> None:
        self.open = 0
        self.per_target: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, cfg: NodeConfig, metrics: Any, flt: ChangeFilter) -> Iterator[None]:
        """A slot for a watch of ``flt`` while the block runs; 503 when none is free."""
        target = _target(flt)
        held = self.per_target.get(target, 0)
        if self.open >= cfg.watch_max_subscribers:
            metrics.watch_refused.labels("node").inc()
            raise _full(f"This node already serves {self.open} watches (its limit)")
        if held >= cfg.watch_max_per_key:
            metrics.watch_refused.labels("key").inc()
            raise _full(f"This node already serves {held} watches of {target} (its limit)")
        self.open += 1
        self.per_target[target] = held + 1
        metrics.watch_subscribers.inc()
        try:
            yield
        finally:
            self.open -= 1
            left = self.per_target[target] - 1
            if left:
                self.per_target[target] = left
            else:
                del self.per_target[target]
            metrics.watch_subscribers.dec()


async def watch(request: web.Request, slots: WatchSlots) -> web.StreamResponse:
    ctx, principal = caller(request, VIEWER)
    query = parse_query(request, principal)
    hub = ctx.hub
    if hub is None:
        raise _state_unavailable()
    with slots.hold(ctx.rt.cfg, ctx.rt.metrics, query.flt):
        try:
            if query.stream:
                return await _stream(request, ctx, hub, query)
            return await _long_poll(ctx, hub, query)
        except HistoryCompacted as exc:
            raise compacted(exc) from None


async def _long_poll(ctx: ApiContext, hub: ChangeHub, query: WatchQuery) -> web.Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.wait_s
    since = query.since
    while True:
        page = _page(ctx, since, query.flt)
        remaining = deadline - loop.time()
        if page is None:
            if remaining <= 0 or hub.closed:
                raise _state_unavailable()
            await asyncio.sleep(min(0.05, remaining))
            continue
        since = page.through
        if page.changes or remaining <= 0 or hub.closed:
            body = {"index": page.through, "events": page.changes}
            return json_response(body, headers=read_headers(ctx.rt, page.applied))
        await hub.wait_beyond(since, remaining)


def _sse(data: Any, *, event: str | None = None, event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def encode_changes(changes: list[dict[str, Any]]) -> bytes:
    """SSE events for ``changes``; ``id:`` only on the last event of each index."""
    out = bytearray()
    for i, change in enumerate(changes):
        last_of_index = i + 1 == len(changes) or changes[i + 1]["index"] != change["index"]
        out += _sse(change, event_id=change["index"] if last_of_index else None)
    return bytes(out)


def _progress(index: int) -> bytes:
    return _sse({"index": index}, event="progress", event_id=index)


async def _stream(
    request: web.Request, ctx: ApiContext, hub: ChangeHub, query: WatchQuery
) -> web.StreamResponse:
    page = _page(ctx, query.since, query.flt)  # a 410 is still a proper status here
    if page is None:
        raise _state_unavailable()
    headers = {
        **read_headers(ctx.rt, page.applied),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Correlation-Id": CORRELATION_ID.get() or "",
    }
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "text/event-stream"
    if ctx.cors_origins:
        cors.add_headers(request, resp, ctx.cors_origins)
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    start = page.through if query.since is None else query.since
    try:
        await resp.write(f"retry: {RETRY_MS}\n".encode() + _progress(start))
        last_write = loop.time()
        while True:
            if page is not None and page.changes:
                await resp.write(encode_changes(page.changes))
                last_write = loop.time()
            cursor = page.through if page is not None else start
            start = cursor
            if hub.closed or request.transport is None or request.transport.is_closing():
                break
            full = page is not None and page.through < page.applied
            idle = query.heartbeat_s - (loop.time() - last_write)
            if not full and idle > 0:
                await hub.wait_beyond(cursor, idle)
                if hub.closed:
                    break
            if loop.time() - last_write >= query.heartbeat_s:
                await resp.write(_progress(cursor))
                last_write = loop.time()
            try:
                page = _page(ctx, cursor, query.flt)
            except HistoryCompacted as exc:
                problem = compacted(exc).body(request.rel_url.raw_path, CORRELATION_ID.get() or "")
                await resp.write(_sse(problem, event="compacted"))
                break
            if page is None:  # a snapshot is being installed: look again shortly
                await asyncio.sleep(0.05)
        await resp.write_eof()
    except ConnectionError:  # the client went away
        pass
    return resp


def add_routes(router: web.UrlDispatcher) -> None:
    slots = WatchSlots()  # one app's watches

    async def handler(request: web.Request) -> web.StreamResponse:
        return await watch(request, slots)

    router.add_get(WATCH, handler, allow_head=False)
