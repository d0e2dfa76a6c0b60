"""HTTP API throughput of one node: GET of one entry and PUT of 1 KB values.

Run: ``.venv/bin/python -m benchmarks.bench_http [--rounds 3] [--seconds 3]
[--clients 1,10,32,64] [--loop uvloop|asyncio] [--access-log]``

The node (a single-member cluster: Runtime + API, WAL fsync on) runs in a child process on
its own event loop; N concurrent aiohttp clients in this process keep one request each in
flight for ``--seconds``. Only 2xx answers count as done (anything else is counted as an
error and reported); requests/s = done / elapsed. Each figure is the median of the rounds,
with p50/p99 latency of the median round. Both processes share the machine's cores, so the
node's CPU time per request (its process time over the phase / requests) is also shown: it
is the figure that survives a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import uvloop

KEY = "bench-admin-key"
HEADERS = {"X-Api-Key": KEY}
NS = "bench"


# -- the node (child process) -----------------------------------------------------------------
def _node_main(conn: Connection, loop_kind: str, access_log: bool) -> None:
    import logging
    import os

    from confman.api import configure_logging, serve
    from confman.node.runtime import Runtime
    from tests.api.harness import single_node_config

    if access_log:
        configure_logging("info", "json", open(os.devnull, "w"))  # noqa: SIM115
    else:
        logging.getLogger().setLevel(logging.WARNING)

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            from dataclasses import replace

            from confman.node.config import ApiKey, hash_key

            cfg = replace(
                single_node_config(Path(tmp)),
                api_keys=(ApiKey("bench", hash_key(KEY), ("admin",)),),
            )
            rt = Runtime(cfg)
            await rt.start()
            while rt.role != "leader":
                await asyncio.sleep(0.01)
            server = await serve(rt, "127.0.0.1", 0)
            conn.send(server.port)
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def on_message() -> None:  # "cpu": report this process's CPU seconds; "stop"
                if conn.recv() == "cpu":
                    conn.send(time.process_time())
                elif not done.done():
                    done.set_result(None)

            loop.add_reader(conn.fileno(), on_message)
            await done
            loop.remove_reader(conn.fileno())
            await server.stop()
            await rt.stop()

    if loop_kind == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


# -- the clients ------------------------------------------------------------------------------
def _node_cpu(conn: Connection) -> float:
    conn.send("cpu")
    return float(conn.recv())


async def _phase(
    conn: Connection, base: str, clients: int, seconds: float, method: str, value: str
) -> tuple[float, int, list[float], float]:
    """(requests/s, errors, latencies, node CPU µs per request) of ``clients`` workers."""
    connector = aiohttp.TCPConnector(limit=clients)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(base, connector=connector, headers=HEADERS) as session:
        deadline = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            nonlocal errors
            url = f"/api/v1/namespaces/{NS}/config/" + ("k" if method == "GET" else f"w{n}")
            body = {"value": value} if method == "PUT" else None
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with session.request(method, url, json=body) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1

        cpu0 = _node_cpu(conn)
        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(clients)))
        elapsed = time.perf_counter() - start
        cpu = _node_cpu(conn) - cpu0
    done = len(latencies) + errors
    return len(latencies) / elapsed, errors, latencies, cpu / max(1, done) * 1e6


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _run(conn: Connection, port: int, args: argparse.Namespace) -> None:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base, headers=HEADERS) as s:
        for method, path, body in (
            ("PUT", f"/api/v1/namespaces/{NS}", {}),
            ("PUT", f"/api/v1/namespaces/{NS}/config/k", {"value": "x" * 200}),
        ):
            async with s.request(method, path, json=body) as r:
                assert r.status in (200, 201), await r.text()
    value = "v" * 1024
    print(
        f"{'op':<5} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'node CPU us/req':>15} {'errors':>7}"
    )
    for method in ("GET", "PUT"):
        for clients in args.clients:
            rounds = []
            for _ in range(args.rounds):
                rounds.append(await _phase(conn, base, clients, args.seconds, method, value))
            rates = [r[0] for r in rounds]
            med = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
            print(
                f"{method:<5} {clients:>7} {statistics.median(rates):>9.0f} "
                f"{_pct(med[2], 0.5):>8.2f} {_pct(med[2], 0.99):>8.2f} "
                f"{statistics.median(r[3] for r in rounds):>15.0f} {sum(r[1] for r in rounds):>7}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,10,32,64")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--access-log", action="store_true", help="JSON access log to /dev/null")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_node_main, args=(child, args.loop, args.access_log))
    proc.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the node did not start")
        port = parent.recv()
        print(
            f"# one node ({args.loop}, access log {'on' if args.access_log else 'off'}), "
            f"median of {args.rounds} x {args.seconds:g}s, 1 KB PUT values"
        )
        uvloop.run(_run(parent, port, args))
    finally:
        parent.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    main()
