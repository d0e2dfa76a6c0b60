"""CORS: off unless ``http.cors_origins`` lists origins (or ``*``); then only those."""

from __future__ import annotations

from aiohttp import web

from confman.api.problems import Problem

ALLOW_HEADERS = (
    "Content-Type, X-Api-Key, X-Correlation-Id, If-Match, If-None-Match, Idempotency-Key, "
    "X-Confman-Consistency, X-Confman-Min-Index"
)
EXPOSE_HEADERS = (
    "ETag, Location, Retry-After, X-Correlation-Id, X-Confman-Index, X-Confman-Role, "
    "X-Confman-Last-Contact-Ms, X-Confman-Leader, X-Confman-Replayed-From"
)
MAX_AGE = "600"


def allowed_origin(origins: frozenset[str], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for ``origin``, or None when not allowed."""
    if origin is None or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def preflight(request: web.Request, origins: frozenset[str]) -> web.Response:
    """Answer a preflight: 204 for an allowed origin and path, else a problem."""
    allow = allowed_origin(origins, request.headers.get("Origin"))
    if allow is None:
        raise Problem(403, "Origin not allowed", "This origin may not call the API")
    exc = request.match_info.http_exception
    if exc is not None and not isinstance(exc, web.HTTPMethodNotAllowed):
        raise exc
    methods = sorted(exc.allowed_methods) if isinstance(exc, web.HTTPMethodNotAllowed) else []
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": allow,
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        },
    )


def add_headers(request: web.Request, resp: web.StreamResponse, origins: frozenset[str]) -> None:
    """CORS headers on an actual response to an allowed origin."""
    allow = allowed_origin(origins, request.headers.get("Origin"))
    if allow is None:
        if origins:
            resp.headers["Vary"] = "Origin"
        return
    resp.headers.setdefault("Access-Control-Allow-Origin", allow)
    resp.headers.setdefault("Access-Control-Expose-Headers", EXPOSE_HEADERS)
    resp.headers["Vary"] = "Origin"
