"""A fault-injecting TCP proxy for one directed peer link (A's connections to B).

Node A is configured to dial B's raft address at the proxy's port; the proxy forwards to B.
Modes, switchable at any time from any thread:

- ``pass``: forward bytes both ways, optionally delayed by ``latency_ms`` (+ ``jitter_ms``,
  order preserved).
- ``drop``: a black hole, like a real partition. Connections are accepted and kept open,
  new ones included (no upstream is dialled), and every byte is discarded both ways. When
  the link heals (back to ``pass``), connections that lost bytes are closed, since their
  byte streams are broken; the peers reconnect. Connections that carried nothing survive.
- ``reset``: every connection is aborted with a TCP RST, and new connections are reset as
  soon as they are accepted (the listener stays bound, so the port cannot be taken).

`LinkProxy` lives on an asyncio loop; its control methods may be called from any thread.
`ProxyThread` runs a loop in a daemon thread for synchronous callers (`ProcessCluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "drop", "reset"]
MODES: tuple[Mode, ...] = ("pass", "drop", "reset")
_T = TypeVar("_T")
_CHUNK = 65536


@dataclass(slots=True)
class ProxyStats:
    """Counters of one proxy since it started."""

    accepted: int = 0
    reset: int = 0  # connections aborted (reset mode, heal of a broken stream, no upstream)
    bytes_forwarded: int = 0
    bytes_dropped: int = 0


@dataclass(eq=False, slots=True)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    broken: bool = False  # bytes were discarded: the stream can never be resumed
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close a connection at once with a TCP RST."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class LinkProxy:
    """Proxy for one directed link: listens on ``host:port`` and forwards to ``target``."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "",
        mode: Mode = "pass",
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.target = target
        self.name = name or f"->{target[0]}:{target[1]}"
        self.stats = ProxyStats()
        self._host = host
        self._port = port
        self._mode: Mode = mode
        self._latency = latency_ms / 1000
        self._jitter = jitter_ms / 1000
        self._connect_timeout = connect_timeout
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> LinkProxy:
        """Bind and start accepting; returns self."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and abort every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = [t for c in self._conns for t in c.tasks]
        self._abort_all(lambda c: True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._port

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def latency_ms(self) -> float:
        return self._latency * 1000

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ control
    def set_mode(
        self, mode: Mode, *, latency_ms: float | None = None, jitter_ms: float | None = None
    ) -> None:
        """Switch mode (and optionally latency); safe to call from any thread."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r} (known: {', '.join(MODES)})")
        self._call(lambda: self._set_mode(mode, latency_ms, jitter_ms))

    def _set_mode(self, mode: Mode, latency_ms: float | None, jitter_ms: float | None) -> None:
        if latency_ms is not None:
            self._latency = max(0.0, latency_ms / 1000)
        if jitter_ms is not None:
            self._jitter = max(0.0, jitter_ms / 1000)
        self._mode = mode
        if mode == "reset":
            self._abort_all(lambda c: True)
        elif mode == "pass":
            self._abort_all(lambda c: c.broken or c.upstream is None)

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            fn()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
            return

        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    def _abort_all(self, which: Callable[[_Conn], bool]) -> None:
        for c in list(self._conns):
            if which(c):
                self._conns.discard(c)
                self.stats.reset += 1
                _abort(c.client)
                _abort(c.upstream)
                for t in c.tasks:
                    t.cancel()

    # ------------------------------------------------------------------ data path
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self._mode == "reset":
            self.stats.reset += 1
            _abort(writer)
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            up_reader: asyncio.StreamReader | None = None
            if self._mode == "pass":
                try:
                    up_reader, conn.upstream = await asyncio.wait_for(
                        asyncio.open_connection(*self.target), self._connect_timeout
                    )
                except (OSError, TimeoutError):
                    # B is down: A sees its connection closed, as it would be refused.
                    self.stats.reset += 1
                    _abort(writer)
                    return
                if conn not in self._conns:  # reset while connecting
                    _abort(conn.upstream)
                    return
            else:
                conn.broken = True  # dialled during a partition: nothing ever reached B
            conn.tasks.append(asyncio.create_task(self._pump(reader, conn.upstream, conn)))
            if up_reader is not None:
                conn.tasks.append(asyncio.create_task(self._pump(up_reader, writer, conn)))
            # Either direction ending (EOF or error) ends the connection.
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(conn)
            for t in conn.tasks:
                t.cancel()
            _abort(conn.upstream)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, conn: _Conn
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    data = await src.read(_CHUNK)
                except (ConnectionError, OSError):
                    return
                if not data:
                    return
                if dst is None or conn.broken or self._mode != "pass":
                    self._discard(conn, len(data))
                    continue
                if self._latency <= 0 and self._jitter <= 0 and (sender is None or sender.done()):
                    await self._write(dst, data, conn)
                    continue
                due = time.monotonic() + self._latency + self._rng.uniform(0, self._jitter)
                queue.put_nowait((due, data))
                if sender is None or sender.done():
                    sender = asyncio.create_task(self._send_delayed(queue, dst, conn))
        finally:
            if sender is not None:
                sender.cancel()

    async def _send_delayed(
        self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        last_due = 0.0
        while not queue.empty():
            due, data = queue.get_nowait()
            last_due = max(last_due, due)  # jitter never reorders bytes
            delay = last_due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if conn.broken or self._mode != "pass":
                self._discard(conn, len(data))
                continue
            await self._write(dst, data, conn)

    async def _write(self, dst: asyncio.StreamWriter, data: bytes, conn: _Conn) -> None:
        try:
            dst.write(data)
            await dst.drain()
        except (ConnectionError, OSError):
            conn.broken = True
            return
        self.stats.bytes_forwarded += len(data)

    def _discard(self, conn: _Conn, n: int) -> None:
        conn.broken = True
        self.stats.bytes_dropped += n


class ProxyThread:
    """An asyncio loop in a daemon thread that hosts proxies for synchronous code."""

    def __init__(self, name: str = "confman-proxies") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._proxies: list[LinkProxy] = []
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        """Run a coroutine on the proxy loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def proxy(self, target: tuple[str, int], **kwargs: Any) -> LinkProxy:
        """Create and start a `LinkProxy` on this thread's loop."""
        p = self.run(LinkProxy(target, **kwargs).start())
        self._proxies.append(p)
        return p

    def close(self) -> None:
        """Close every proxy and stop the loop (idempotent)."""
        if self.loop.is_closed():
            return
        if self.loop.is_running():

            async def close_all() -> None:
                await asyncio.gather(*(p.close() for p in self._proxies), return_exceptions=True)

            with contextlib.suppress(Exception):
                self.run(close_all())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
        self._proxies.clear()


__all__ = ["MODES", "LinkProxy", "Mode", "ProxyStats", "ProxyThread"]
