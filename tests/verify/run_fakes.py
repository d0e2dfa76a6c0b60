"""Fakes for the verify runner's tests: an in-memory Confman over HTTP, and a fake cluster
controller for the nemesis.

`FakeConfman` serves the parts of the API the workload uses from one shared map: node 0 is
the leader, the others answer writes and lease reads with ``307`` to it. Every answer is
atomic, so the fake is linearizable unless ``stale`` (followers then answer reads from the
state of a few changes ago). `script` queues canned behaviours for the next requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from confman.verify.cluster import ClusterError


@dataclass(slots=True)
class Canned:
    """What the next matching request gets instead of the normal answer."""

    status: int = 0
    title: str = ""
    apply: bool = False
    """Apply the request first (then answer ``status``): an acknowledged-late write."""
    delay: float = 0.0
    drop: bool = False
    """Close the connection without an answer (after applying, if ``apply``)."""
    method: str | None = None
    """Only requests with this method match (None: any)."""


@dataclass(slots=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    node: int


class FakeConfman:
    """``n`` fake nodes on loopback sharing one versioned map (start with `start`)."""

    def __init__(self, n: int = 3, *, stale: bool = False) -> None:
        self.n = n
        self.stale = stale
        self.entries: dict[tuple[str, str], tuple[str, int]] = {}
        self.namespaces: set[str] = set()
        self.past: list[dict[tuple[str, str], tuple[str, int]]] = [{}]
        self.script: list[Canned] = []
        self.seen: list[Seen] = []
        self.urls: list[str] = []
        self.redirect_to: dict[int, int] = {}
        """node -> node it redirects writes to (default: 0, the leader)."""
        self._runners: list[web.AppRunner] = []

    async def start(self) -> FakeConfman:
        for i in range(self.n):
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handler(i))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.urls.append(f"http://127.0.0.1:{port}/")
            self._runners.append(runner)
        return self

    async def stop(self) -> None:
        for r in self._runners:
            await r.cleanup()

    async def __aenter__(self) -> FakeConfman:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ handling
    def _handler(self, node: int) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = None
            if request.can_read_body:
                body = json.loads(await request.text())
            self.seen.append(
                Seen(request.method, request.path_qs, dict(request.headers), body, node)
            )
            write = request.method in ("PUT", "DELETE")
            lease = request.query.get("consistency") == "lease"
            target = self.redirect_to.get(node, 0)
            if (write or lease) and node != target:
                raise web.HTTPTemporaryRedirect(self.urls[target].rstrip("/") + request.path_qs)
            canned = self._canned(request.method)
            if canned is None:
                return self._answer(request, node, body)
            if canned.delay:
                await asyncio.sleep(canned.delay)
            answer = self._answer(request, node, body) if canned.apply else None
            if canned.drop:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)  # never sent
            if canned.status:
                return _problem(canned.status, canned.title)
            assert answer is not None
            return answer

        return handle

    def _canned(self, method: str) -> Canned | None:
        for i, c in enumerate(self.script):
            if c.method is None or c.method == method:
                return self.script.pop(i)
        return None

    def _answer(self, request: web.Request, node: int, body: Any) -> web.Response:
        parts = request.path.strip("/").split("/")  # api v1 namespaces ns [config key]
        if len(parts) == 4 and request.method == "PUT":
            created = parts[3] not in self.namespaces
            self.namespaces.add(parts[3])
            return web.json_response({"path": parts[3]}, status=201 if created else 200)
        if len(parts) != 6 or parts[4] != "config":
            return _problem(404, "Not found")
        ns, key = parts[3], parts[5]
        if ns not in self.namespaces:
            return _problem(404, "Namespace not found")
        current = self.entries.get((ns, key))
        if request.method == "GET":
            if self.stale and node != 0:
                current = self.past[max(0, len(self.past) - 3)].get((ns, key))
            if current is None:
                return _problem(404, "Configuration not found")
            return web.json_response({"value": current[0], "version": current[1]})
        if_match = request.headers.get("If-Match")
        if if_match is not None and (current is None or f'"{current[1]}"' != if_match):
            return _problem(412, "Precondition failed")
        if request.headers.get("If-None-Match") == "*" and current is not None:
            return _problem(412, "Precondition failed")
        if request.method == "DELETE":
            if current is None:
                return _problem(404, "Configuration not found")
            del self.entries[(ns, key)]
            self.past.append(dict(self.entries))
            return web.Response(status=204)
        version = 1 if current is None else current[1] + 1
        self.entries[(ns, key)] = (body["value"], version)
        self.past.append(dict(self.entries))
        doc = {"namespace": ns, "key": key, "value": body["value"], "version": version}
        return web.json_response(doc, status=201 if version == 1 else 200)


def _problem(status: int, title: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"title": title, "status": status, "detail": title}),
        content_type="application/problem+json",
    )


# ---------------------------------------------------------------------------------- nemesis
@dataclass
class FakeProc:
    code: int | None = None

    def poll(self) -> int | None:
        return self.code

    @property
    def returncode(self) -> int | None:
        return self.code


@dataclass
class FakeNode:
    id: str
    proc: FakeProc | None = None
    paused: bool = False
    expect_down: bool = True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class FakeCluster:
    """Records what the nemesis asks of a `ProcessCluster`."""

    n: int = 3
    current_leader: str | None = "node2"
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = [f"node{i + 1}" for i in range(self.n)]
        self.nodes = {nid: FakeNode(nid) for nid in self.ids}
        for nid in self.ids:
            self.start(nid)
        self.calls.clear()

    def leader(self) -> str | None:
        return self.current_leader

    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        self.calls.append(("start", nid))
        if not node.running:
            node.proc = FakeProc()
        node.expect_down = False
        node.paused = False

    def kill(self, nid: str) -> None:
        self.calls.append(("kill", nid))
        node = self.nodes[nid]
        node.expect_down = True
        node.proc = FakeProc(-9)
        node.paused = False

    def pause(self, nid: str) -> None:
        if not self.nodes[nid].running:
            raise ClusterError(f"{nid} is not running")
        self.calls.append(("pause", nid))
        self.nodes[nid].paused = True

    def resume(self, nid: str) -> None:
        self.calls.append(("resume", nid))
        self.nodes[nid].paused = False

    def isolate(self, nid: str) -> None:
        self.calls.append(("isolate", nid))

    def partition(self, a: list[str], b: list[str] | None = None) -> None:
        self.calls.append(("partition", tuple(a)))

    def bridge(self, a: list[str], middle: str, b: list[str]) -> None:
        self.calls.append(("bridge", tuple(a), middle, tuple(b)))

    def cut(self, a: str, b: str) -> None:
        self.calls.append(("cut", a, b))

    def heal(self) -> None:
        self.calls.append(("heal",))

    def forget_exit(self, nid: str) -> None:
        self.nodes[nid].expect_down = True

    def log_tail(self, nid: str, lines: int = 60) -> str:
        return f"--- {nid} log ---"
