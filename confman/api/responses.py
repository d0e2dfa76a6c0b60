"""JSON responses and the headers reads and writes carry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from confman.api.node_runtime import NodeRuntime
from confman.node.state.machine import ApplyResult


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``data`` serialised with orjson as ``application/json``."""
    return web.Response(
        status=status, body=orjson.dumps(data), headers=headers, content_type="application/json"
    )


def read_headers(rt: NodeRuntime, applied_index: int) -> dict[str, str]:
    """``X-Confman-Index`` (applied index of the state read), role and leader contact."""
    return {
        "X-Confman-Index": str(applied_index),
        "X-Confman-Role": rt.role,
        "X-Confman-Last-Contact-Ms": str(rt.last_contact_ms()),
    }


def write_headers(result: ApplyResult) -> dict[str, str]:
    """``X-Confman-Index`` of the change, and a replay marker for idempotent retries."""
    headers = {"X-Confman-Index": str(result.index)}
    if result.duplicate_of is not None:
        headers["X-Confman-Replayed-From"] = str(result.duplicate_of)
    return headers


def etag(version: int) -> str:
    """The entity tag of an entry at ``version``."""
    return f'"{version}"'
