"""A single-node Confman cluster with its HTTP API, on an event loop in a background thread,
so tests can be plain functions using a synchronous httpx client."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from confman.api import HttpServer, serve
from confman.node.config import ApiKey, Member, NodeConfig, hash_key

T = TypeVar("T")

#: name -> (key, roles, namespaces)
KEYS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "admin": ("test-admin-key", ("admin",), ("*",)),
    "editor": ("test-editor-key", ("editor",), ("*",)),
    "publisher": ("test-publisher-key", ("publisher",), ("*",)),
    "viewer": ("test-viewer-key", ("viewer",), ("*",)),
    # an admin limited to the namespace "other" (and "other/..."): 403 everywhere else
    "scoped": ("test-scoped-key", ("admin",), ("other",)),
}


def api_keys() -> tuple[ApiKey, ...]:
    return tuple(
        ApiKey(f"{name} key", hash_key(key), roles, namespaces)
        for name, (key, roles, namespaces) in KEYS.items()
    )


def headers(role: str | None) -> dict[str, str]:
    """Request headers authenticating as ``role`` (a name of KEYS) or anonymous."""
    return {} if role is None else {"X-Api-Key": KEYS[role][0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def single_node_config(data_dir: Path, **overrides: Any) -> NodeConfig:
    http_port, raft_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}/"
    cfg = NodeConfig(
        node_id="node1",
        data_dir=data_dir,
        members=(Member("node1", ("127.0.0.1", raft_port), url),),
        cluster_secret=b"api-tests-cluster-secret",
        http_listen=("127.0.0.1", http_port),
        http_advertise=url,
        raft_listen=("127.0.0.1", raft_port),
        api_keys=api_keys(),
        election_timeout_ms=(100, 200),
        tick_ms=10,
    )
    return replace(cfg, **overrides)


class LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 30) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class LiveNode:
    """A started single-node Runtime serving the API on 127.0.0.1."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        from confman.node.runtime import Runtime

        self.cfg = single_node_config(data_dir, **overrides)
        self.lt = LoopThread()
        self.rt = Runtime(self.cfg)
        self.rt.fatal = self._fatal
        self.server: HttpServer | None = None
        self.fatal_code: int | None = None
        try:
            self.lt.run(self.rt.start())
            wait_for(lambda: self.lt.call(lambda: self.rt.role) == "leader", 15, "leadership")
            self.server = self.lt.run(serve(self.rt))
        except BaseException:
            self.close()
            raise
        self.url = self.server.url
        self.client = httpx.Client(base_url=self.url, timeout=20)

    def _fatal(self, code: int) -> None:
        self.fatal_code = code

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        if self.server is not None:
            self.lt.run(self.server.stop())
        self.lt.run(self.rt.stop())
        self.lt.close()
        assert self.fatal_code is None, f"the runtime called fatal({self.fatal_code})"
