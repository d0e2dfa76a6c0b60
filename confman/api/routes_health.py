"""Anonymous endpoints: health, readiness, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from confman.api.context import CONTEXT
from confman.api.problems import Problem
from confman.api.responses import json_response
from confman.node.state.commands import format_timestamp

#: Files of the docs page: name -> content type (nothing else under /docs is served).
DOCS_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "docs.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain",
    "NOTICE": "text/plain",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain",
}
_DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_NO_STORE = {"Cache-Control": "no-store"}


def _now() -> str:
    return format_timestamp(datetime.now(UTC))


@cache
def asset(name: str) -> bytes:
    """A file shipped in ``confman/api`` (package data), read once."""
    if name.startswith("static/"):
        return resources.files("confman.api").joinpath("static", name[7:]).read_bytes()
    return resources.files("confman.api").joinpath(name).read_bytes()


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "healthy", "timestamp": _now()}, headers=_NO_STORE)


async def ready(request: web.Request) -> web.Response:
    rt = request.app[CONTEXT].rt
    ok = rt.is_ready()
    leader = rt.leader_id
    body = {
        "status": "ready" if ok else "not_ready",
        "timestamp": _now(),
        "cluster": {
            "nodeId": rt.id,
            "role": rt.role,
            "leaderKnown": leader is not None,
            "leader": rt.leader_url if leader is not None else None,
            "term": rt.term,
            "commitIndex": rt.commit_index,
            "appliedIndex": rt.applied_index,
            "members": [{"id": m.id, "http": m.http} for m in rt.members.values()],
        },
    }
    return json_response(body, 200 if ok else 503, _NO_STORE)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    text = generate_latest(ctx.rt.metrics.registry) + generate_latest(ctx.metrics.registry)
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST, **_NO_STORE})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=asset("openapi.json"),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(
        body=asset("static/docs.html"),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": _DOCS_CSP, "Cache-Control": "no-cache"},
    )


async def docs_file(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    ctype = DOCS_FILES.get(name)
    if ctype is None:
        raise Problem(404, "Not found", "No such file of the docs page")
    return web.Response(
        body=asset("static/" + name),
        headers={
            "Content-Type": ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""),
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/health", health)
    router.add_get("/health/ready", ready)
    router.add_get("/metrics", metrics, allow_head=False)
    router.add_get("/openapi.json", openapi, allow_head=False)
    router.add_get("/docs", docs_page, allow_head=False)
    router.add_get("/docs/{file}", docs_file, allow_head=False)
