"""Disk used per byte of value written, on a real 3-node cluster (issue 16's measurement).

Starts ``ProcessCluster(3, proxies=False, log_level="warning")`` (the layout
``benchmarks.compare`` uses: real ``confman serve`` processes, default snapshot interval),
creates a namespace, then drives ``--writes`` PUTs of ``--value-bytes`` over ``--keys`` keys
(write i goes to key ``i % keys``) from ``--concurrency`` asyncio writers sharing one aiohttp
session. A writer sends to the node it believes leads; a 307 moves it (and every writer) to
the ``Location`` it names, a 503 or a connection error is retried after a short pause.

When every write is acknowledged it waits for all nodes to reach the same applied index and
for their snapshot work to go quiet, then walks each node's data directory and reports:

- every component (``state.db``, ``state.db-wal``, ``state.db-shm``, the snapshot files,
  the Raft WAL, anything else) in apparent bytes and in allocated bytes (``st_blocks``);
- the bytes of values written (``writes x value-bytes``) and disk / that (the issue's ratio);
- throughput over the first and the last 20% of acknowledgements and their ratio;
- disk samples taken every 10% of the run (apparent bytes per node), to see growth.

    .venv/bin/python -m benchmarks.bench_disk --writes 50000 --json docs/benchmarks/X/50k.json

The client runs on the same machine as the three nodes (2 cores here): it takes CPU from
them, as wrk does in ``benchmarks.compare``; throughput is comparable within one machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from confman.verify.cluster import ProcessCluster

NS = "diskbench"
MiB = 1024 * 1024


# ----------------------------------------------------------------------------- disk
def classify(rel: Path) -> str:
    """The component a file of a node's data directory belongs to."""
    parts = rel.parts
    name = rel.name
    if parts[0] == "snapshots":
        return "snapshots"
    if parts[0] == "wal":
        return "raft_wal"
    if name == "state.db":
        return "state.db"
    if name == "state.db-wal":
        return "state.db-wal"
    if name == "state.db-shm":
        return "state.db-shm"
    return "other"


COMPONENTS = ("state.db", "state.db-wal", "state.db-shm", "snapshots", "raft_wal", "other")


def disk_usage(data_dir: Path) -> dict[str, dict[str, int]]:
    """Per component: apparent bytes, allocated bytes and file count (files may vanish)."""
    out = {c: {"bytes": 0, "allocated": 0, "files": 0} for c in COMPONENTS}
    for root, _dirs, files in os.walk(data_dir):
        for f in files:
            p = Path(root) / f
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            c = out[classify(p.relative_to(data_dir))]
            c["bytes"] += st.st_size
            c["allocated"] += st.st_blocks * 512
            c["files"] += 1
    return out


def total(usage: dict[str, dict[str, int]], what: str = "bytes") -> int:
    return sum(c[what] for c in usage.values())


# ----------------------------------------------------------------------------- load
@dataclass
class Load:
    writes: int
    keys: int
    value_bytes: int
    concurrency: int
    leader_base: str
    headers: dict[str, str]
    next_i: int = 0
    done: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    redirects: int = 0
    #: monotonic time of each acknowledgement, in acknowledgement order
    acks: list[float] = field(default_factory=list)
    on_progress: Any = None

    def value(self, i: int, rng: random.Random) -> str:
        # printable, distinct per write, not trivially compressible
        head = f"w{i:08d}-"
        body = "".join(rng.choices(string.ascii_letters + string.digits, k=64))
        reps = self.value_bytes // len(body) + 1
        return (head + body * reps)[: self.value_bytes]


async def writer(load: Load, session: aiohttp.ClientSession, wid: int) -> None:
    rng = random.Random(wid)
    while True:
        i = load.next_i
        if i >= load.writes:
            return
        load.next_i = i + 1
        key = f"k{i % load.keys:06d}"
        body = json.dumps({"value": load.value(i, rng)}).encode()
        attempt = 0
        err = ""
        while True:
            url = f"{load.leader_base}/api/v1/namespaces/{NS}/config/{key}"
            try:
                async with session.put(
                    url, data=body, headers=load.headers, allow_redirects=False
                ) as r:
                    await r.read()
                    status = r.status
                    location = r.headers.get("Location")
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, location = -1, None
                err = type(exc).__name__
            if status in (200, 201):
                load.done += 1
                load.acks.append(time.monotonic())
                if load.on_progress is not None:
                    load.on_progress(load.done)
                break
            if status == 307 and location:
                parts = urlsplit(location)
                load.leader_base = f"{parts.scheme}://{parts.netloc}"
                load.redirects += 1
                continue
            label = err if status == -1 else str(status)
            load.retries[label] = load.retries.get(label, 0) + 1
            attempt += 1
            if attempt > 200:
                raise RuntimeError(f"write {i} failed {attempt} times (last {label})")
            await asyncio.sleep(min(0.5, 0.02 * attempt))


async def drive(load: Load) -> float:
    timeout = aiohttp.ClientTimeout(total=10)
    conn = aiohttp.TCPConnector(limit=load.concurrency * 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
        t0 = time.monotonic()
        await asyncio.gather(*(writer(load, session, w) for w in range(load.concurrency)))
        return t0


def window_rate(acks: list[float], t0: float, lo: float, hi: float) -> float:
    """Acknowledgements per second between the lo and hi fractions of all acknowledgements."""
    n = len(acks)
    a, b = int(n * lo), int(n * hi)
    start = t0 if a == 0 else acks[a - 1]
    end = acks[b - 1]
    return (b - a) / (end - start) if end > start else float("nan")


# ----------------------------------------------------------------------------- cluster
def settle(c: ProcessCluster, timeout: float = 120.0, quiet_s: float = 5.0) -> dict[str, int]:
    """Wait until every node has the same applied index and disk stops changing."""
    deadline = time.monotonic() + timeout
    idx: dict[str, int] = {}
    while time.monotonic() < deadline:
        sts = c.statuses(c.ids)
        idx = {n: (s or {}).get("cluster", {}).get("appliedIndex", -1) for n, s in sts.items()}
        if len(set(idx.values())) == 1 and -1 not in idx.values():
            break
        time.sleep(0.2)
    # snapshots run in the background: wait until no node's usage changes for quiet_s
    last = None
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = tuple(total(disk_usage(c.node(n).data_dir)) for n in c.ids)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            break
        time.sleep(0.5)
    return idx


def create_namespace(c: ProcessCluster) -> str:
    def created() -> bool:
        lead = c.leader() or c.ids[0]
        r = c.http.put(
            c.url(lead) + f"api/v1/namespaces/{NS}",
            json={},
            headers=c.auth("admin"),
            follow_redirects=True,
        )
        return 200 <= r.status_code < 300

    c.wait_for(created, 20, 0.1, f"namespace {NS} to be created")
    return c.url(c.wait_leader(timeout=30)).rstrip("/")


def machine_info() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "commit": commit,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    base = Path(args.dir or tempfile.mkdtemp(prefix="confman-diskbench-"))
    c = ProcessCluster(3, base, proxies=False, log_level="warning")
    samples: list[dict[str, Any]] = []
    try:
        c.start_all()
        c.wait_leader(timeout=60)
        leader_base = create_namespace(c)
        c.wait_ready(timeout=30)
        headers = {"X-Api-Key": c.keys["admin"], "Content-Type": "application/json"}
        load = Load(
            args.writes, args.keys, args.value_bytes, args.concurrency, leader_base, headers
        )

        # disk samples every 10% of acknowledgements, taken on a thread (os.walk blocks)
        step = max(1, args.writes // 10)
        marks = iter(range(step, args.writes + 1, step))
        next_mark = [next(marks, None)]
        t_start = [0.0]

        def sample(done: int) -> None:
            samples.append(
                {
                    "acked": done,
                    "t": round(time.monotonic() - t_start[0], 2),
                    "bytes": {n: total(disk_usage(c.node(n).data_dir)) for n in c.ids},
                }
            )

        def progress(done: int) -> None:
            if next_mark[0] is not None and done >= next_mark[0]:
                next_mark[0] = next(marks, None)
                threading.Thread(target=sample, args=(done,), daemon=True).start()
                if not args.quiet:
                    rate = done / (time.monotonic() - t_start[0])
                    print(f"  {done:>9,} acked  {rate:7.0f}/s", file=sys.stderr, flush=True)

        load.on_progress = progress
        t_start[0] = time.monotonic()
        t0 = asyncio.run(drive(load))
        t_end = load.acks[-1]
        applied = settle(c)
        usage = {n: disk_usage(c.node(n).data_dir) for n in c.ids}
        leader = c.leader()
    finally:
        c.close()
        if not args.keep and args.dir is None:
            import shutil

            shutil.rmtree(base, ignore_errors=True)

    written = args.writes * args.value_bytes
    first = window_rate(load.acks, t0, 0.0, 0.2)
    last = window_rate(load.acks, t0, 0.8, 1.0)
    nodes = {}
    for n, u in usage.items():
        nodes[n] = {
            "components": u,
            "total_bytes": total(u),
            "total_allocated": total(u, "allocated"),
            "ratio": round(total(u) / written, 2),
            "ratio_allocated": round(total(u, "allocated") / written, 2),
            "applied_index": applied.get(n),
        }
    return {
        "params": {
            "writes": args.writes,
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "concurrency": args.concurrency,
        },
        "machine": info | {"load_after": os.getloadavg()},
        "leader_at_end": leader,
        "value_bytes_written": written,
        "elapsed_s": round(t_end - t0, 2),
        "rate_overall": round(args.writes / (t_end - t0), 1),
        "rate_first_20pct": round(first, 1),
        "rate_last_20pct": round(last, 1),
        "last_over_first": round(last / first, 3),
        "redirects": load.redirects,
        "retries": load.retries,
        "nodes": nodes,
        "samples": sorted(samples, key=lambda s: s["acked"]),
    }


def mib(b: int) -> str:
    return f"{b / MiB:,.1f}"


def table(res: dict[str, Any]) -> str:
    p = res["params"]
    lines = [
        f"{p['writes']:,} writes of {p['value_bytes']} B over {p['keys']:,} keys, "
        f"{p['concurrency']} writers; values written {mib(res['value_bytes_written'])} MiB; "
        f"commit {res['machine']['commit']}",
        f"throughput: overall {res['rate_overall']:,.0f}/s, first 20% "
        f"{res['rate_first_20pct']:,.0f}/s, last 20% {res['rate_last_20pct']:,.0f}/s "
        f"(last/first {res['last_over_first']:.2f}); elapsed {res['elapsed_s']:.0f} s; "
        f"redirects {res['redirects']}, retries {res['retries'] or 0}",
        "",
        "MiB (apparent)  " + "".join(f"{n:>12}" for n in res["nodes"]),
    ]
    for comp in COMPONENTS:
        row = [res["nodes"][n]["components"][comp]["bytes"] for n in res["nodes"]]
        files = [res["nodes"][n]["components"][comp]["files"] for n in res["nodes"]]
        label = f"{comp} ({max(files)}f)" if comp == "snapshots" else comp
        lines.append(f"{label:<16}" + "".join(f"{mib(b):>12}" for b in row))
    lines.append(
        f"{'total':<16}" + "".join(f"{mib(v['total_bytes']):>12}" for v in res["nodes"].values())
    )
    lines.append(
        f"{'allocated':<16}"
        + "".join(f"{mib(v['total_allocated']):>12}" for v in res["nodes"].values())
    )
    lines.append(
        f"{'disk/values':<16}" + "".join(f"{v['ratio']:>11.2f}x" for v in res["nodes"].values())
    )
    if res["samples"]:
        lines += ["", "growth (total MiB per node at % of writes acknowledged):"]
        for s in res["samples"]:
            pct = 100 * s["acked"] / p["writes"]
            vals = " ".join(f"{mib(b):>9}" for b in s["bytes"].values())
            lines.append(f"  {pct:5.0f}%  t={s['t']:7.1f}s  {vals}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=200_000)
    ap.add_argument("--value-bytes", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--dir", help="cluster directory (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    res = run(args)
    out = table(res)
    print(out)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        with contextlib.suppress(OSError):
            path.with_suffix(".txt").write_text(out + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
