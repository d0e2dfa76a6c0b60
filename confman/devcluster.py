"""``confman dev``: a supervisor that runs the local cluster's nodes as child processes.

A node that dies is reported and the others keep running; nothing is restarted on its own.
Other terminals control the nodes through a Unix socket in the cluster's directory
(``control.sock``, one JSON request and one JSON answer per connection; see ``control``).
Ctrl-C (or SIGTERM) stops every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx
import orjson

from confman.devconfig import DevNode

SOCKET_NAME = "control.sock"
#: Seconds a stopped node gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 10.0
#: Seconds ``start`` waits for a node to answer ``/health``.
START_WAIT_S = 20.0
MAX_REQUEST_BYTES = 4096
OPS = ("status", "start", "stop", "kill", "restart")
_COLORS = ("cyan", "magenta", "green", "yellow", "blue")


class DevError(Exception):
    """A control request that cannot be carried out; the message says why."""


def describe_exit(code: int) -> str:
    """``exit 0``, ``killed by SIGKILL``, ... for a child's return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    from confman.verify.cluster import die_with_parent

    die_with_parent()


class _Child:
    """One node's process (or its absence) and the task that prints its output."""

    def __init__(self, node: DevNode, color: str) -> None:
        self.node = node
        self.color = color
        self.proc: asyncio.subprocess.Process | None = None
        self.pump: asyncio.Task[None] | None = None
        self.expected_exit = False
        self.last_exit: str | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def row(self) -> dict[str, Any]:
        return {
            "node": self.node.name,
            "url": self.node.url,
            "state": "running" if self.running else "stopped",
            "pid": self.proc.pid if self.running and self.proc else None,
            "lastExit": self.last_exit,
        }


class Supervisor:
    """Starts, stops and watches the dev cluster's nodes; serves the control socket."""

    def __init__(self, nodes: list[DevNode], root: Path) -> None:
        self.root = root
        self.children = {
            n.name: _Child(n, _COLORS[i % len(_COLORS)]) for i, n in enumerate(nodes)
        }
        self._stopping = False
        self._watchers: set[asyncio.Task[None]] = set()

    def _child(self, name: object) -> _Child:
        if not isinstance(name, str) or name not in self.children:
            raise DevError(f"unknown node {name!r}; the nodes are {', '.join(self.children)}")
        return self.children[name]

    def _say(self, child: _Child, text: str, color: str = "yellow") -> None:
        click.secho(f"{child.node.name:>6} | {text}", fg=color, bold=True)

    # ---------------------------------------------------------------- processes
    async def start(self, name: str) -> dict[str, Any]:
        """Start node ``name``; answer once it serves ``/health`` (or say it does not yet)."""
        child = self._child(name)
        if child.running and child.proc is not None:  # (running implies a process)
            raise DevError(f"{name} is already running (pid {child.proc.pid})")
        main_thread = sys.platform == "linux"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "confman",
            "serve",
            "--config",
            str(child.node.config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent if main_thread else None,
        )
        child.proc, child.expected_exit = proc, False
        assert proc.stdout is not None
        child.pump = asyncio.create_task(self._pump(child, proc.stdout))
        watcher = asyncio.create_task(self._watch(child, proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        self._say(child, f"started (pid {proc.pid})", "green")
        serving = await _wait_health(child.node.url, proc, START_WAIT_S)
        return {**child.row(), "serving": serving}

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> dict[str, Any]:
        """Send ``sig`` to node ``name`` and wait for it to exit (SIGKILL after a grace)."""
        child = self._child(name)
        proc = child.proc
        if proc is None or proc.returncode is not None:
            raise DevError(f"{name} is not running")
        child.expected_exit = True
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if child.pump is not None:
            await child.pump
        return child.row()

    async def restart(self, name: str) -> dict[str, Any]:
        if self._child(name).running:
            await self.stop(name)
        return await self.start(name)

    async def _pump(self, child: _Child, stream: asyncio.StreamReader) -> None:
        prefix = click.style(f"{child.node.name:>6} |", fg=child.color)
        while line := await stream.readline():
            click.echo(f"{prefix} {line.decode(errors='replace').rstrip()}")

    async def _watch(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        child.last_exit = describe_exit(code)
        if child.expected_exit or self._stopping:
            self._say(child, f"stopped ({child.last_exit})")
        else:
            self._say(
                child,
                f"DIED ({child.last_exit}); the other nodes keep running. "
                f"`confman dev start {child.node.name}` brings it back.",
                "red",
            )

    async def stop_all(self) -> None:
        """Stop every running node (SIGTERM, then SIGKILL after the grace)."""
        self._stopping = True
        names = [c.node.name for c in self.children.values() if c.running]
        await asyncio.gather(*(self.stop(n) for n in names), return_exceptions=True)
        await asyncio.gather(*self._watchers, return_exceptions=True)

    # ---------------------------------------------------------------- control socket
    async def handle(self, request: object) -> dict[str, Any]:
        """Carry out one control request ``{"op": ..., "node": ...}``."""
        if not isinstance(request, dict) or request.get("op") not in OPS:
            raise DevError(f"a request is {{'op': one of {', '.join(OPS)}, 'node': NAME}}")
        op, node = request["op"], request.get("node")
        if op == "status":
            return {"nodes": [c.row() for c in self.children.values()], "pid": os.getpid()}
        actions: dict[str, Callable[[str], Any]] = {
            "start": self.start,
            "stop": self.stop,
            "kill": lambda n: self.stop(n, signal.SIGKILL),
            "restart": self.restart,
        }
        return {"node": await actions[op](self._child(node).node.name)}

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            line = await reader.readline()
            if len(line) > MAX_REQUEST_BYTES:
                raise DevError("request too large")
            answer = {"ok": True, **await self.handle(orjson.loads(line))}
        except (DevError, orjson.JSONDecodeError) as exc:
            answer = {"ok": False, "error": str(exc)}
        with contextlib.suppress(ConnectionError):
            writer.write(orjson.dumps(answer) + b"\n")
            await writer.drain()
            writer.close()

    async def run(self) -> int:
        """Start every node, serve control requests until Ctrl-C/SIGTERM, stop every node."""
        sock = self.root / SOCKET_NAME
        if sock.exists():
            if await _answers(sock):
                raise DevError(f"a dev cluster is already running in {self.root}")
            sock.unlink()
        server = await asyncio.start_unix_server(self._serve_client, path=str(sock))
        sock.chmod(0o600)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            began = time.monotonic()
            await asyncio.gather(*(self.start(n) for n in self.children))
            ready = await _wait_ready([c.node.url for c in self.children.values()], 30.0)
            if ready:
                _banner([c.node.url for c in self.children.values()], time.monotonic() - began)
            else:
                click.secho("the cluster is not ready yet; see the node logs above", fg="red")
            await stop.wait()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            await self.stop_all()
            click.echo("all nodes stopped")
        return 0


def _banner(urls: list[str], took: float) -> None:
    click.secho(
        f"\ncluster ready in {took:.2f}s: {', '.join(urls)}\n"
        f"try: curl -H 'X-Api-Key: confman_dev_abc123' {urls[0]}api/v1/namespaces\n"
        "     confman dev status    (and kill|stop|start|restart NODE from another terminal)\n"
        "Ctrl-C stops all nodes.\n",
        fg="green",
        bold=True,
    )


async def _wait_health(url: str, proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether the node at ``url`` answers ``/health`` before ``timeout`` (False if it exits)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline and proc.returncode is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url + "health")).status_code == 200:
                    return True
            await asyncio.sleep(0.05)
    return False


async def _wait_ready(urls: list[str], timeout: float) -> bool:
    """Whether every node reports ready (a leader known) before ``timeout``."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            ready = 0
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    ready += (await client.get(url + "health/ready")).status_code == 200
            if ready == len(urls):
                return True
            await asyncio.sleep(0.05)
    return False


async def _answers(sock: Path) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(str(sock))
    except OSError:
        return False
    writer.close()
    return True


def control(root: Path, op: str, node: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Send one request to the ``confman dev`` running in ``root``; its answer, or DevError."""
    import socket

    path = root / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            msg = f"no dev cluster is running in {root} (start one with `confman dev`)"
            raise DevError(msg) from None
        s.sendall(orjson.dumps({"op": op, "node": node}) + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = orjson.loads(data) if data else {"ok": False, "error": "no answer"}
    if not answer.get("ok"):
        raise DevError(str(answer.get("error")))
    return dict(answer)
