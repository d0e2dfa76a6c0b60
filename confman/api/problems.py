"""RFC 7807 problem details: the one shape of every error the API returns, and the builders
of the problems and redirects shared by reads, writes and forwarding (no leader, a leader
elsewhere, a node stopping)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:confman:problem:"
_RETRY = {"Retry-After": "1"}

#: status -> (slug, title) for the generic problems.
_GENERIC: dict[int, tuple[str, str]] = {
    400: ("invalid-request", "Invalid request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    408: ("request-timeout", "Request timeout"),
    411: ("length-required", "Length required"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("payload-too-large", "Payload too large"),
    414: ("uri-too-long", "URI too long"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("unprocessable", "Unprocessable request"),
    431: ("headers-too-large", "Request header fields too large"),
    500: ("internal", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
    504: ("timeout", "Gateway timeout"),
}


class Problem(Exception):
    """An error response; raise it anywhere in a handler, the middleware renders it."""

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str = "",
        *,
        slug: str | None = None,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        generic_slug, generic_title = _GENERIC.get(status, ("error", "Error"))
        self.status = status
        self.title = title or generic_title
        self.detail = detail or self.title
        self.slug = slug or generic_slug
        self.field = field
        self.headers: dict[str, str] = dict(headers or {})
        self.close = close
        super().__init__(f"{status} {self.title}: {self.detail}")

    def body(self, instance: str, trace_id: str) -> dict[str, object]:
        doc: dict[str, object] = {
            "type": TYPE_PREFIX + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            "traceId": trace_id,
        }
        if self.field is not None:
            doc["field"] = self.field
        return doc

    def response(self, instance: str, trace_id: str) -> web.Response:
        resp = web.Response(
            status=self.status,
            body=orjson.dumps(self.body(instance, trace_id)),
            headers=self.headers,
            content_type=PROBLEM_CONTENT_TYPE,
        )
        if self.close:
            resp.force_close()
        return resp


class Redirect(Exception):
    """Answer ``307 Temporary Redirect`` to ``location`` (method and body are preserved)."""

    def __init__(self, location: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(location)
        self.location = location
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return web.Response(status=307, headers={**self.headers, "Location": self.location})


def from_http_exception(exc: web.HTTPException) -> Problem:
    """The problem for one of aiohttp's own errors (unknown path, wrong method, ...)."""
    status = exc.status
    headers: dict[str, str] = {}
    if status == 404:
        return Problem(404, "Not found", "No resource at this path")
    if status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        headers["Allow"] = allowed
        return Problem(
            405,
            detail=f"Method {exc.method} is not allowed here (allowed: {allowed})",
            headers=headers,
        )
    if status == 413:
        return Problem(413, detail="Request body is too large", close=True)
    text = exc.reason or ""
    return Problem(status, detail=text)


def bad_request(field: str, detail: str, title: str = "Invalid request") -> Problem:
    """A 400 naming the offending field."""
    return Problem(400, title, f"{field}: {detail}", field=field)


def no_leader(detail: str = "No leader is known; an election may be in progress") -> Problem:
    """``503 No leader available`` with ``Retry-After: 1``."""
    return Problem(503, "No leader available", detail, slug="no-leader", headers=_RETRY)


def node_stopping() -> Problem:
    """``503 Node stopping``: the node is shutting down."""
    return Problem(
        503, "Node stopping", "This node is shutting down", slug="node-stopping", headers=_RETRY
    )


def leader_elsewhere(
    request: web.Request, leader_id: str | None, leader_url: str | None
) -> Exception:
    """A 307 to the leader (same path and query), or a 503 when it is unknown."""
    return redirect_to_leader(request.raw_path, leader_id, leader_url)


def redirect_to_leader(raw_path: str, leader_id: str | None, leader_url: str | None) -> Exception:
    """``leader_elsewhere`` for a request known by its raw path (and query)."""
    if leader_id is None:
        return no_leader()
    if not leader_url:
        return no_leader(f"The leader {leader_id!r} has no known HTTP address")
    return Redirect(leader_url.rstrip("/") + raw_path, headers={"X-Confman-Leader": leader_id})
