"""LinkProxy: pass, drop (black hole), reset, latency, heal, control from another thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import pytest

from confman.verify.proxy import LinkProxy, ProxyThread


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def echo_and_proxy(**kwargs: object) -> AsyncIterator[tuple[LinkProxy, asyncio.Server]]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await LinkProxy(("127.0.0.1", port), **kwargs).start()  # type: ignore[arg-type]
    try:
        yield proxy, server
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


async def _connect(proxy: LinkProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*proxy.address)


async def _roundtrip(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes, timeout: float = 2.0
) -> bytes:
    w.write(data)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(data)), timeout)


async def _closed(r: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    """True when the peer closed or reset the connection within ``timeout``."""
    try:
        return await asyncio.wait_for(r.read(1), timeout) == b""
    except (ConnectionError, asyncio.IncompleteReadError):
        return True


async def _silent(r: asyncio.StreamReader, window: float = 0.3) -> bool:
    """True when nothing arrives and the connection stays open for ``window`` seconds."""
    try:
        await asyncio.wait_for(r.read(1), window)
    except TimeoutError:
        return True
    return False


def test_pass_forwards_both_ways() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (proxy, _):
            r, w = await _connect(proxy)
            big = bytes(range(256)) * 4096  # 1 MiB, several chunks
            assert await _roundtrip(r, w, big, 5) == big
            assert proxy.stats.bytes_forwarded == 2 * len(big)
            w.close()

    asyncio.run(main())


def test_drop_is_a_black_hole_and_heal_closes_broken_streams() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (proxy, _):
            r1, w1 = await _connect(proxy)
            assert await _roundtrip(r1, w1, b"hello") == b"hello"
            r_idle, w_idle = await _connect(proxy)
            assert await _roundtrip(r_idle, w_idle, b"x") == b"x"
            proxy.set_mode("drop")
            w1.write(b"lost")
            await w1.drain()
            assert await _silent(r1)  # nothing back, connection still open
            r2, w2 = await _connect(proxy)  # new connections are accepted, not refused
            w2.write(b"lost too")
            await w2.drain()
            assert await _silent(r2)
            assert proxy.stats.bytes_dropped >= len(b"lost") + len(b"lost too")
            proxy.set_mode("pass")
            assert await _closed(r1) and await _closed(r2)  # their streams lost bytes
            assert await _roundtrip(r_idle, w_idle, b"still") == b"still"  # carried nothing
            r3, w3 = await _connect(proxy)
            assert await _roundtrip(r3, w3, b"again") == b"again"
            for w in (w1, w2, w3, w_idle):
                w.close()

    asyncio.run(main())


def test_reset_closes_and_refuses_then_pass_recovers() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (proxy, _):
            r1, w1 = await _connect(proxy)
            assert await _roundtrip(r1, w1, b"a") == b"a"
            proxy.set_mode("reset")
            assert await _closed(r1)
            r2, _w2 = await _connect(proxy)  # the kernel accepts; the proxy resets at once
            assert await _closed(r2)
            assert proxy.connections == 0
            proxy.set_mode("pass")
            r3, w3 = await _connect(proxy)
            assert await _roundtrip(r3, w3, b"b") == b"b"
            w3.close()

    asyncio.run(main())


def test_unreachable_target_closes_the_client() -> None:
    async def main() -> None:
        async with echo_and_proxy() as (proxy, server):
            server.close()
            await server.wait_closed()
            r, _w = await _connect(proxy)
            assert await _closed(r)

    asyncio.run(main())


def test_latency_delays_each_direction_and_keeps_order() -> None:
    async def main() -> None:
        async with echo_and_proxy(latency_ms=60, jitter_ms=20) as (proxy, _):
            r, w = await _connect(proxy)
            t0 = time.monotonic()
            payload = b"".join(b"%05d" % i for i in range(2000))
            for i in range(0, len(payload), 500):
                w.write(payload[i : i + 500])
                await w.drain()
                await asyncio.sleep(0)
            got = await asyncio.wait_for(r.readexactly(len(payload)), 5)
            took = time.monotonic() - t0
            assert got == payload
            assert took >= 0.12  # at least 60 ms each way
            proxy.set_mode("pass", latency_ms=0, jitter_ms=0)
            t0 = time.monotonic()
            assert await _roundtrip(r, w, b"fast") == b"fast"
            assert time.monotonic() - t0 < 0.1
            w.close()

    asyncio.run(main())


def test_rejects_unknown_mode() -> None:
    proxy = LinkProxy(("127.0.0.1", 1))
    with pytest.raises(ValueError, match="unknown proxy mode"):
        proxy.set_mode("flaky")  # type: ignore[arg-type]


def test_proxy_thread_controls_from_other_threads() -> None:
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                s, _ = server.accept()
                accepted.append(s)
                s.sendall(b"hi")

    threading.Thread(target=serve, daemon=True).start()
    host = ProxyThread()
    try:
        proxy = host.proxy(("127.0.0.1", port), name="a->b")
        with socket.create_connection(proxy.address, timeout=2) as c:
            assert c.recv(2) == b"hi"
        # Switched from a foreign thread while the loop runs elsewhere.
        t = threading.Thread(target=proxy.set_mode, args=("reset",))
        t.start()
        t.join()
        assert proxy.mode == "reset"
        # The reset may already hit connect() or only the first read: either is a refusal.
        with (
            contextlib.suppress(ConnectionResetError),
            socket.create_connection(proxy.address, timeout=2) as c,
        ):
            assert c.recv(2) == b""
        proxy.set_mode("pass")
        with socket.create_connection(proxy.address, timeout=2) as c:
            assert c.recv(2) == b"hi"
    finally:
        host.close()
        server.close()
        for s in accepted:
            s.close()
    assert host.loop.is_closed()
