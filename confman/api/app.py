"""The aiohttp application: one middleware (correlation id, problems, CORS, metrics, access
log) around the routes, and ``serve`` to run it on a TCP socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from confman.api import (
    access,
    cors,
    forward,
    routes_config,
    routes_health,
    routes_namespaces,
    watch,
)
from confman.api.auth import ACTOR, KeyStore
from confman.api.changes import ChangeHub
from confman.api.compaction import retention_configured, run_compactor
from confman.api.context import CONTEXT, READ_WAIT_MAX_S, ApiContext, HttpMetrics
from confman.api.fastpath import FastFront
from confman.api.forward import Forwarder
from confman.api.logs import (
    CORRELATION_ID,
    access_log,
    error_log,
    log_malformed,
    malformed_reason,
)
from confman.api.node_runtime import NodeRuntime
from confman.api.problems import PROBLEM_CONTENT_TYPE, Problem, Redirect, from_http_exception
from confman.api.routes_health import asset
from confman.api.validation import correlation_id

#: Longest a stopping server waits for the requests in progress.
_SHUTDOWN_TIMEOUT_S = 60.0  # as aiohttp's runner
_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"})


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _answer(
    request: web.Request, handler: Handler, ctx: ApiContext, cid: str
) -> web.StreamResponse:
    """The handler's response; a write redirected to the leader is forwarded if asked to."""
    try:
        return await handler(request)
    except Redirect as r:
        if ctx.forwarder is None or not forward.wanted(request, ctx.forward_writes):
            raise
        return await ctx.forwarder.forward(request, ctx.max_body, r.location, cid)


async def _dispatch(
    request: web.Request, handler: Handler, ctx: ApiContext, cid: str
) -> web.StreamResponse:
    """The handler's response, or the problem/redirect it raised."""
    try:
        if ctx.cors_origins and cors.is_preflight(request):
            return cors.preflight(request, ctx.cors_origins)
        return await _answer(request, handler, ctx, cid)
    except Problem as p:
        return p.response(request.rel_url.raw_path, cid)
    except Redirect as r:
        return r.response()
    except web.HTTPException as exc:
        return from_http_exception(exc).response(request.rel_url.raw_path, cid)
    except asyncio.CancelledError:
        raise
    except Exception:
        error_log.exception(
            "unhandled error in %s %s",
            request.method,
            request.rel_url.raw_path,
            extra={"fields": {"correlationId": cid}},
        )
        problem = Problem(500, detail=f"An unexpected error occurred; quote traceId {cid}")
        return problem.response(request.rel_url.raw_path, cid)


def _middleware(ctx: ApiContext) -> Any:
    origins = ctx.cors_origins
    requests = ctx.metrics.requests
    latency = ctx.metrics.latency
    # labels() costs a lock and a tuple build per call: keep the children
    counters: dict[tuple[str, str, int], Any] = {}
    histograms: dict[str, Any] = {}

    def record(request: web.Request, resp: web.StreamResponse, cid: str, elapsed: float) -> None:
        route = _route_name(request)
        method = request.method if request.method in _METHODS else "other"  # bounded labels
        key = (method, route, resp.status)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = requests.labels(method, route, str(resp.status))
        counter.inc()
        histogram = histograms.get(route)
        if histogram is None:
            histogram = histograms[route] = latency.labels(route)
        histogram.observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s %d",
                request.method,
                request.rel_url.raw_path,
                resp.status,
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.raw_path,
                        "status": resp.status,
                        "durationMs": round(elapsed * 1000, 3),
                        "actor": request.get(ACTOR),
                        "remote": request.remote,
                        "correlationId": cid,
                    }
                },
            )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        cid = correlation_id(request) or os.urandom(16).hex()
        token = CORRELATION_ID.set(cid)  # for log records emitted while handling it
        try:
            resp = await _dispatch(request, handler, ctx, cid)
            resp.headers["X-Correlation-Id"] = cid
            if origins:
                cors.add_headers(request, resp, origins)
            record(request, resp, cid, time.perf_counter() - start)
            return resp
        finally:
            CORRELATION_ID.reset(token)

    return middleware


def create_app(rt: NodeRuntime) -> web.Application:
    """The HTTP API of the node ``rt`` (a started ``confman.node.runtime.Runtime``)."""
    cfg = rt.cfg
    ctx = ApiContext(
        rt=rt,
        keys=KeyStore(cfg.api_keys),
        max_body=cfg.max_body_bytes,
        idempotency_ttl_s=cfg.idempotency_ttl_s,
        read_wait_s=min(READ_WAIT_MAX_S, cfg.replication_timeout_ms / 1000),
        metrics=HttpMetrics(),
        cors_origins=frozenset(cfg.cors_origins),
        forward_writes=cfg.forward_writes,
    )
    asset("openapi.json")  # fail at start-up, not on first use, when package data is missing
    asset("static/docs.html")
    middlewares = [_middleware(ctx)]
    if cfg.profile == "dev":  # inside the main middleware, which renders its 421
        middlewares.append(access.dev_host_guard(ctx))
    app = web.Application(middlewares=middlewares, client_max_size=cfg.max_body_bytes)
    app[CONTEXT] = ctx
    routes_health.add_routes(app.router)
    routes_namespaces.add_routes(app.router)
    routes_config.add_routes(app.router)
    watch.add_routes(app.router)
    app.on_startup.append(_start_services)
    app.on_shutdown.append(_stop_services)
    app.on_cleanup.append(_close_forwarder)
    return app


async def _start_services(app: web.Application) -> None:
    """Watch wake-ups, the write forwarder and history compaction, while the app runs."""
    ctx = app[CONTEXT]
    cfg = ctx.rt.cfg
    ctx.hub = ChangeHub(ctx.rt)
    ctx.hub.start()
    ctx.forwarder = Forwarder(ctx.rt.id, cfg.replication_timeout_ms / 1000 + 5)
    if retention_configured(cfg):
        ctx.background.append(asyncio.create_task(run_compactor(ctx), name="confman-compactor"))


async def _stop_services(app: web.Application) -> None:
    """Before the server waits for open requests: end watches, stop background work."""
    ctx = app[CONTEXT]
    if ctx.hub is not None:
        await ctx.hub.close()
    for task in ctx.background:
        task.cancel()
    for task in ctx.background:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    ctx.background.clear()


async def _close_forwarder(app: web.Application) -> None:
    """After the server has finished the requests it had (forwarded writes among them)."""
    forwarder = app[CONTEXT].forwarder
    if forwarder is not None:
        await forwarder.close()


class _ProblemRequestHandler(RequestHandler):
    """Renders errors aiohttp answers before any middleware (unparsable requests, headers
    over the size limit) as problems too."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # a bug: aiohttp logs it at ERROR with its traceback
            super().handle_error(request, status, exc, message)  # may raise
            detail = ""
        else:  # the client's fault: one debug line without the bytes, no traceback
            if request.writer.output_size > 0:  # as aiohttp: a response is under way
                raise ConnectionError("Response is sent already, cannot send an error")
            detail = malformed_reason(message)
            log_malformed(status, detail, request.remote)
        cid = os.urandom(16).hex()
        problem = Problem(status, detail=detail)
        resp = web.Response(
            status=status,
            body=orjson.dumps(problem.body(request.rel_url.raw_path, cid)),
            content_type=PROBLEM_CONTENT_TYPE,
            headers={"X-Correlation-Id": cid},
        )
        resp.force_close()
        return resp


class _ProblemServer(Server):
    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


@dataclass(slots=True)
class HttpServer:
    """A running API server; ``await stop()`` closes it."""

    runner: web.AppRunner
    host: str
    port: int
    server: asyncio.Server | None = None
    front: FastFront | None = None
    tls: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()  # no new connections
        if self.front is not None:
            await self.front.shutdown(_SHUTDOWN_TIMEOUT_S)  # its writes in progress answered
        await self.runner.cleanup()  # waits (60 s at most) for aiohttp's requests in progress


async def serve(
    rt: NodeRuntime,
    host: str | None = None,
    port: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> HttpServer:
    """Serve ``create_app(rt)`` on ``host:port`` (default: ``rt.cfg.http_listen``; port 0
    picks a free port, see ``HttpServer.port``), behind the fast front. The front answers
    plain GETs and PUTs of an entry unless ``http.fast_path`` is off; either way it applies
    the connection caps and the first head's deadline, then hands the connection to aiohttp,
    whose keep-alive timeout is ``http.keepalive_timeout_s`` too. With ``ssl_context`` (see
    ``confman.api.tls``) it serves HTTPS; the TLS handshake gets the head's deadline."""
    cfg = rt.cfg
    cfg_host, cfg_port = cfg.http_listen
    host = cfg_host if host is None else host
    port = cfg_port if port is None else port
    runner = web.AppRunner(
        create_app(rt),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=cfg.http_keepalive_timeout_s,
    )
    await runner.setup()
    assert runner.server is not None
    if type(runner.server) is Server:
        runner.server.__class__ = _ProblemServer  # same layout; only __call__ differs
    front = FastFront(runner.app[CONTEXT], runner.server, answering=cfg.fast_path)
    try:
        tls_options: dict[str, Any] = {}
        if ssl_context is not None:
            tls_options = {
                "ssl": ssl_context,
                "ssl_handshake_timeout": cfg.http_request_head_timeout_s,
            }
        server = await asyncio.get_running_loop().create_server(
            front.protocol, host, port, backlog=1024, **tls_options
        )
    except BaseException:
        await runner.cleanup()
        raise
    bound = server.sockets[0].getsockname()
    front.local_port, front.secure = int(bound[1]), ssl_context is not None
    return HttpServer(runner, host, int(bound[1]), server, front, ssl_context is not None)
