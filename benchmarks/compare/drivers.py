"""Load generators: wrk (closed loop, LuaJIT scripts in lua/) and asyncio+aiohttp on uvloop
(closed loop with the same workloads, and the open-loop fixed-arrival-rate generator).

Targets: a workload either sends everything to the leader (``spread=False``: writes, the
.NET scenarios) or spreads its clients over the three members, leader first (10 clients ->
4, 3, 3; 1 client -> the leader). With wrk that is one wrk process per member (1 thread each;
a single-target run uses up to 2 threads), started together for the same ``-d``; their
results are merged exactly by `results.merge` (rates add up, latency histograms add up).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiohttp
import uvloop

from benchmarks.compare.results import Run, hist_of, merge, parse_wrk, split_connections
from benchmarks.compare.systems import Req, System

WRK_TIMEOUT_S = 5  # wrk counts slower answers as timeouts (and records no latency for them)


@dataclass(frozen=True, slots=True)
class Workload:
    """What one measured run does."""

    name: str
    mode: str  # write | read | mixed
    read: str = "local"  # local (etcd: serializable) | linearizable
    spread: bool = True  # reads over all members; False: everything to the leader
    fixed_clients: int | None = None  # the .NET scenarios run at exactly this many clients
    rate: int | None = None  # open loop: arrivals per second (Python driver only)
    help: str = ""

    @property
    def forward(self) -> bool:
        """Writes sent to followers: Confman needs ``?forward=true`` (etcd forwards anyway)."""
        return self.mode == "mixed" and self.spread


def targets(system: System, wl: Workload, clients: int) -> list[tuple[str, int]]:
    """(member URL, connections) pairs for a run, leader first; members with 0 left out."""
    urls = system.urls() if wl.spread and wl.mode != "write" else [system.leader_url()]
    return [(u, n) for u, n in zip(urls, split_connections(clients, len(urls)), strict=True) if n]


# ------------------------------------------------------------------------------------ wrk
def wrk_command(
    script: str,
    url: str,
    conns: int,
    threads: int,
    seconds: int,
    wl: Workload,
    keys: int,
    size: int,
    seed: int,
    extra: Sequence[str],
) -> list[str]:
    """The wrk command line for one target."""
    return [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, seconds)}s",
        "--timeout", f"{WRK_TIMEOUT_S}s", "-s", script, url, "--",
        f"mode={wl.mode}", f"keys={keys}", f"value={size}", f"seed={seed}", "read_pct=80",
        *extra,
    ]  # fmt: skip


def run_wrk(
    system: System, wl: Workload, clients: int, seconds: float, keys: int, size: int, seed: int
) -> Run:
    """One wrk process per target, concurrently; the merged result."""
    tg = targets(system, wl, clients)
    script = str(system.wrk_script())
    extra = system.wrk_args(wl.read, wl.forward)
    procs = []
    for i, (url, n) in enumerate(tg):
        threads = 1 if len(tg) > 1 else min(2, n)
        cmd = wrk_command(script, url, n, threads, round(seconds), wl, keys, size, seed + i, extra)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    try:
        outs = [p.communicate(timeout=seconds + 60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    parts = []
    for p, (out, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"wrk exited {p.returncode}: {err.strip()[-500:]}")
        parts.append(parse_wrk(out))
    run = merge(parts)
    run.extra["targets"] = [n for _, n in tg]
    return run


# ------------------------------------------------------------------------------- Python
def _tables(
    system: System, urls: Sequence[str], wl: Workload, keys: int, size: int
) -> dict[str, tuple[list[Req], list[Req]]]:
    out = {}
    for u in urls:
        reads = [system.request(u, "read", i, size, wl.read, wl.forward) for i in range(keys)]
        writes = [system.request(u, "write", i, size, wl.read, wl.forward) for i in range(keys)]
        out[u] = (reads, writes)
    return out


def _pick(rng: random.Random, mode: str, reads: list[Req], writes: list[Req]) -> Req:
    if mode == "write" or (mode == "mixed" and rng.random() >= 0.8):
        return writes[rng.randrange(len(writes))]
    return reads[rng.randrange(len(reads))]


async def _send(
    session: aiohttp.ClientSession, req: Req, errors: Counter[str], follow: bool = False
) -> bool:
    try:
        async with session.request(
            req.method, req.url, data=req.body, headers=req.headers, allow_redirects=follow
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return True
            errors[f"status {resp.status}"] += 1
    except TimeoutError:
        errors["timeout"] += 1
    except aiohttp.ClientError as exc:
        errors[type(exc).__name__] += 1
    return False


def _session(conns: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=conns, force_close=False),
        timeout=aiohttp.ClientTimeout(total=WRK_TIMEOUT_S),
        skip_auto_headers=("User-Agent",),
    )


async def _closed_loop(
    system: System, wl: Workload, clients: int, seconds: float, keys: int, size: int, seed: int
) -> Run:
    tg = targets(system, wl, clients)
    tables = _tables(system, [u for u, _ in tg], wl, keys, size)
    errors: Counter[str] = Counter()
    lat_us: list[int] = []
    ok = 0
    sessions = {u: _session(n) for u, n in tg}
    deadline = 0.0

    async def client(url: str, cid: int) -> None:
        nonlocal ok
        rng = random.Random(seed * 1009 + cid)
        reads, writes = tables[url]
        session = sessions[url]
        while time.monotonic() < deadline:
            req = _pick(rng, wl.mode, reads, writes)
            t0 = time.perf_counter_ns()
            good = await _send(session, req, errors)
            lat_us.append((time.perf_counter_ns() - t0) // 1000)
            ok += good

    try:
        start = time.monotonic()
        deadline = start + seconds
        tasks = [client(u, cid) for u, n in tg for cid in range(n)]
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    finally:
        for s in sessions.values():
            await s.close()
    run = Run(ok, ok / elapsed, dict(errors), hist_of(lat_us), elapsed)
    run.extra["targets"] = [n for _, n in tg]
    return run


async def _open_loop(
    system: System, wl: Workload, conns: int, seconds: float, keys: int, size: int, seed: int
) -> Run:
    """Fixed arrival rate: request i is due at start + i/rate, whatever happened before.

    Its latency is measured from that scheduled time, not from when it could be sent, so a
    stall (server or generator) shows up as latency of every request that was due during it
    instead of silently lowering the offered load (coordinated omission). At most ``conns``
    connections are open; a request waiting for one is still on the clock.
    """
    assert wl.rate
    tg = targets(system, wl, conns)
    tables = _tables(system, [u for u, _ in tg], wl, keys, size)
    sessions = {u: _session(n) for u, n in tg}
    weights = [u for u, n in tg for _ in range(n)]
    errors: Counter[str] = Counter()
    lat_us: list[int] = []
    ok = 0
    rng = random.Random(seed)
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    total = int(wl.rate * seconds)
    pending: set[asyncio.Task[None]] = set()
    max_lag = 0.0

    async def one(req: Req, session: aiohttp.ClientSession, due: float) -> None:
        nonlocal ok
        good = await _send(session, req, errors)
        lat_us.append(int((clock() - due) * 1e6))
        ok += good

    try:
        start = clock() + 0.05
        for i in range(total):
            due = start + i / wl.rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            url = weights[i % len(weights)]
            reads, writes = tables[url]
            t = asyncio.create_task(one(_pick(rng, wl.mode, reads, writes), sessions[url], due))
            pending.add(t)
            t.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(set(pending), timeout=WRK_TIMEOUT_S + 1)
        for t in list(pending):
            t.cancel()
            errors["unfinished"] += 1
    finally:
        for s in sessions.values():
            await s.close()
    run = Run(ok, ok / seconds, dict(errors), hist_of(lat_us), seconds)
    run.extra.update(offered_rps=wl.rate, max_dispatch_lag_ms=round(max_lag * 1000, 2))
    return run


def run_python(
    system: System, wl: Workload, clients: int, seconds: float, keys: int, size: int, seed: int
) -> Run:
    """The asyncio+aiohttp driver on uvloop, in this process (closed or open loop)."""
    if wl.rate:
        return uvloop.run(_open_loop(system, wl, clients, seconds, keys, size, seed))
    return uvloop.run(_closed_loop(system, wl, clients, seconds, keys, size, seed))


def age(
    system: System, writes: int, keys: int, size: int, conns: int = 64
) -> tuple[float, dict[str, int]]:
    """Write ``writes`` values over keys ``0..keys-1`` (write i to key ``i % keys``), as
    preload does, so a following run measures a cluster that has grown; requests are made
    as they are sent, so a million writes do not sit in memory."""
    url = system.leader_url()
    reqs = (system.request(url, "write", i % keys, size, "local", False) for i in range(writes))
    t0 = time.monotonic()
    errors = uvloop.run(_preload(reqs, conns))
    return time.monotonic() - t0, dict(errors)


async def _preload(reqs: Iterable[Req], conns: int) -> Counter[str]:
    errors: Counter[str] = Counter()
    it = iter(reqs)
    async with _session(conns) as session:

        async def worker() -> None:
            for req in it:
                for _ in range(200):  # a leader change may happen under this burst
                    if await _send(session, req, errors, follow=True):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise RuntimeError(f"pre-load: {req.url} failed 200 times: {dict(errors)}")

        await asyncio.gather(*(worker() for _ in range(conns)))
    return errors


def preload(system: System, count: int, size: int, conns: int = 32) -> tuple[float, dict[str, int]]:
    """Write keys 0..count-1 (the workloads' key names) to the leader, following redirects
    and retrying failures; seconds taken and the failed attempts by kind."""
    url = system.leader_url()
    reqs = [system.request(url, "write", i, size, "local", False) for i in range(count)]
    t0 = time.monotonic()
    errors = uvloop.run(_preload(reqs, conns))
    return time.monotonic() - t0, dict(errors)
