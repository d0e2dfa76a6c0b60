"""Small fake nodes for the client tests: aiohttp servers in a background thread that record
every request and answer from a handler the test gives."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[["FakeNode", web.Request], Awaitable[web.StreamResponse]]

ENTRY = {
    "namespace": "n",
    "key": "k",
    "value": "v",
    "type": "string",
    "version": 1,
    "updatedAt": "2026-01-01T00:00:00.000000Z",
    "updatedBy": "me",
}


@dataclass(slots=True)
class Seen:
    method: str
    path: str
    api_key: str | None


@dataclass
class FakeNode:
    """One server on 127.0.0.1: ``url``, and ``seen``, every request it received."""

    handler: Handler
    ssl_context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def keys_seen(self) -> list[str]:
        return [s.api_key for s in self.seen if s.api_key is not None]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, request.headers.get("X-Api-Key")))
        return await self.handler(self, request)


class FakeNodes:
    """Runs fake nodes on one event loop in a daemon thread; ``close()`` stops them."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def add(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> FakeNode:
        node = FakeNode(handler, ssl_context)
        fut = asyncio.run_coroutine_threadsafe(self._start(node), self._loop)
        node.port = fut.result(10)
        return node

    async def _start(self, node: FakeNode) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", node._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=node.ssl_context)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert isinstance(server, asyncio.Server)
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        async def stop() -> None:
            for r in self._runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def ready_body(role: str, leader: str | None, members: list[str] | None = None) -> dict:
    cluster: dict = {"nodeId": "fake", "role": role, "leader": leader, "term": 1}
    if members is not None:
        cluster["members"] = [{"id": f"n{i}", "http": m} for i, m in enumerate(members)]
    return {"status": "ready", "cluster": cluster}


async def answer_entry(node: FakeNode, request: web.Request) -> web.StreamResponse:
    """A node that answers every API request itself (and says it leads)."""
    if request.path == "/health/ready":
        return web.json_response(ready_body("leader", node.url + "/"))
    return web.json_response(ENTRY, status=201 if request.method == "PUT" else 200)


def redirecting(
    target: Callable[[], str], members: Callable[[], list[str]] | None = None
) -> Handler:
    """A follower whose ``/health/ready`` names ``target()`` as leader and that answers
    every API request 307 there (same path and query)."""

    async def handle(node: FakeNode, request: web.Request) -> web.StreamResponse:
        if request.path == "/health/ready":
            listed = members() if members is not None else None
            return web.json_response(ready_body("follower", target() + "/", listed))
        raise web.HTTPTemporaryRedirect(target() + request.path_qs)

    return handle
