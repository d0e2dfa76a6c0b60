"""``confman dev``: run a local cluster as child processes with prefixed output."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

import click
import httpx

_COLORS = ("cyan", "magenta", "green", "yellow", "blue")


async def _pump(name: str, color: str, stream: asyncio.StreamReader) -> None:
    prefix = click.style(f"{name:>6} |", fg=color)
    while line := await stream.readline():
        click.echo(f"{prefix} {line.decode(errors='replace').rstrip()}")


async def _wait_ready(
    urls: list[str], procs: list[asyncio.subprocess.Process], timeout: float = 30.0
) -> float | None:
    """Seconds until every node reports ready, or None if a node died or time ran out."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() - start < timeout:
            if any(p.returncode is not None for p in procs):
                return None
            ready = 0
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(url + "health/ready")
                    ready += r.status_code == 200
            if ready == len(urls):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
    return None


async def run_dev_cluster(configs: list[Path], urls: list[str]) -> int:
    """Start one ``confman serve`` per config; stop them all on Ctrl-C or if one dies."""
    procs: list[asyncio.subprocess.Process] = []
    pumps = []
    for i, cfg in enumerate(configs):
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "confman",
            "serve",
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        procs.append(p)
        assert p.stdout is not None
        pumps.append(asyncio.create_task(_pump(cfg.stem, _COLORS[i % 5], p.stdout)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    took = await _wait_ready(urls, procs)
    if took is not None:
        click.secho(
            f"\ncluster ready in {took:.2f}s: {', '.join(urls)}\n"
            f"try: curl -H 'X-Api-Key: confman_dev_abc123' {urls[0]}api/v1/namespaces\n"
            "     confman status\nCtrl-C stops all nodes.\n",
            fg="green",
            bold=True,
        )
    else:
        click.secho("cluster did not become ready; see the node logs above", fg="red", err=True)
    waiters = [asyncio.create_task(p.wait()) for p in procs]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
    code = 0 if stop.is_set() else 1
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 10)
    except TimeoutError:
        for p in procs:
            if p.returncode is None:
                p.kill()
        await asyncio.gather(*(p.wait() for p in procs))
    await asyncio.gather(*pumps, return_exceptions=True)
    stopper.cancel()
    click.echo("all nodes stopped")
    return code
