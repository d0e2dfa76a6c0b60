"""Read consistency: local (default), linearizable (ReadIndex), lease, and ``minIndex``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from confman.api.context import ApiContext
from confman.api.problems import (
    Problem,
    bad_request,
    leader_elsewhere,
    no_leader,
    node_stopping,
)
from confman.api.responses import read_headers
from confman.api.validation import int_param
from confman.node.errors import NodeStopped, NoLeader, ReadTimeout
from confman.node.state.queries import Reader

CONSISTENCY_LEVELS = ("local", "linearizable", "lease")
CONSISTENCY_HEADER = "X-Confman-Consistency"
MIN_INDEX_HEADER = "X-Confman-Min-Index"
T = TypeVar("T")


def _consistency(request: web.Request) -> str:
    level = request.query.get("consistency") or request.headers.get(CONSISTENCY_HEADER)
    if level is None:
        return "local"
    if level not in CONSISTENCY_LEVELS:
        raise bad_request(
            "consistency", f"must be one of {', '.join(CONSISTENCY_LEVELS)}, not {level[:40]!r}"
        )
    return level


def _min_index(request: web.Request) -> int | None:
    raw = request.query.get("minIndex")
    field = "minIndex"
    if raw is None:
        raw = request.headers.get(MIN_INDEX_HEADER)
        field = MIN_INDEX_HEADER
    return None if raw is None else int_param(raw, field, minimum=0)


async def prepare_read(request: web.Request, ctx: ApiContext) -> Reader:
    """Wait as the requested consistency demands, then the reader to answer from."""
    level = _consistency(request)
    min_index = _min_index(request)
    rt = ctx.rt
    try:
        if level == "lease":
            # First the lease: it runs the clock, so a leader that was paused or cut off
            # learns here that its lease ran out (and may step down) before it answers.
            index = rt.lease_read_index()
            if index is not None:
                await rt.wait_applied(index, ctx.read_wait_s)
            elif rt.role != "leader":
                raise leader_elsewhere(request, rt.leader_id, rt.leader_url)
            else:  # a leader without a valid lease (just elected, or acks late): confirm
                await rt.read_index(ctx.read_wait_s)
        elif level == "linearizable":
            await rt.read_index(ctx.read_wait_s)
        if min_index is not None:
            await rt.wait_applied(min_index, ctx.read_wait_s)
    except NoLeader:
        raise no_leader("Consistent reads need a leader with a quorum") from None
    except ReadTimeout as exc:
        raise Problem(504, "Read timed out", str(exc), slug="read-timeout") from None
    except NodeStopped:
        raise node_stopping() from None
    reader = rt.reader
    if reader is None:
        raise Problem(
            503,
            "State unavailable",
            "A snapshot is being installed; retry shortly",
            slug="state-unavailable",
            headers={"Retry-After": "1"},
        )
    return reader


def read_entry_locally(
    request: web.Request, ctx: ApiContext, namespace: str, key: str
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The fast path of the most common read: a ``local`` read (no query parameters and
    no consistency headers) of an entry that exists. None means: take the general path."""
    headers = request.headers
    if request.query_string or CONSISTENCY_HEADER in headers or MIN_INDEX_HEADER in headers:
        return None
    reader = ctx.rt.reader
    if reader is None:
        return None
    found = reader.get_entry_and_index(namespace, key)
    if found is None:
        return None
    item, index = found
    return item, read_headers(ctx.rt, index)


async def read_state(
    request: web.Request, ctx: ApiContext, query: Callable[[Reader], T]
) -> tuple[T, dict[str, str]]:
    """``query`` on one snapshot of the state, and the read headers of that snapshot."""
    reader = await prepare_read(request, ctx)
    with reader.consistent():
        index = reader.applied_index()
        result = query(reader)
    return result, read_headers(ctx.rt, index)
