"""``confman dev`` as a place to try failures (docs/behaviour.md §2, §5).

A node killed with SIGKILL is reported, the other two keep serving, nothing restarts on its
own, and ``confman dev start`` brings the node back to the same data; Ctrl-C stops every node.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from confman.devconfig import DEV_PORTS

ADMIN = {"X-Api-Key": "confman_dev_abc123"}
T = TypeVar("T")


def _free_offset() -> int:
    """A port offset at which every dev port is free on loopback."""
    for _ in range(200):
        offset = random.randrange(1_000, 40_000)
        wanted = [p + offset for pair in DEV_PORTS for p in pair]
        socks = []
        try:
            for port in wanted:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return offset
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port offset")


def _wait(what: str, fn: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = fn()
            if got:
                return got
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class Dev:
    """A running ``confman dev`` and the commands another terminal would type."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.offset = _free_offset()
        self.urls = {f"node{i + 1}": f"http://127.0.0.1:{h + self.offset}/"
                     for i, (h, _) in enumerate(DEV_PORTS)}
        self.log = root.parent / "dev.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "confman", "dev", "--dir", str(root),
             "--port-offset", str(self.offset)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "confman", "dev", "--dir", str(self.root), *args],
            capture_output=True, text=True, timeout=60,
        )

    def status(self) -> dict[str, dict[str, Any]]:
        r = self.cli("status", "--output", "json")
        assert r.returncode == 0, r.stderr
        return {row["node"]: row for row in json.loads(r.stdout)}

    def leader(self) -> str | None:
        leaders = [n for n, row in self.status().items() if row.get("role") == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    d = Dev(tmp_path / "dev")
    try:
        _wait("a leader and three ready nodes",
              lambda: d.leader() and all(r.get("ready") == "ready" for r in d.status().values()))
        yield d
    finally:
        pids = [row["pid"] for row in d.status().values() if row.get("pid")] if (
            d.proc.poll() is None) else []
        d.close()
        for pid in pids:  # nothing is left running
            _wait(f"pid {pid} to exit", lambda pid=pid: not _alive(pid), 15)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _put(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(url + path, json=body, headers=ADMIN, follow_redirects=True, timeout=5)


def _values(url: str, ns: str) -> dict[str, str]:
    r = httpx.get(f"{url}api/v1/namespaces/{ns}/config", headers=ADMIN, timeout=5)
    assert r.status_code == 200, r.text
    return {e["key"]: e["value"] for e in r.json()}


def test_killed_leader_is_reported_others_serve_and_start_catches_up(dev: Dev) -> None:
    first = dev.leader()
    assert first is not None
    term0 = dev.status()[first]["term"]
    survivors = [n for n in dev.urls if n != first]
    ns = _put(dev.urls[survivors[0]], "api/v1/namespaces/staging", {"description": "s"})
    assert ns.is_success, ns.text

    r = dev.cli("kill", "leader")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{first}: stopped (killed by SIGKILL)"), r.stdout
    rows = dev.status()
    assert rows[first]["state"] == "stopped" and rows[first]["lastExit"] == "killed by SIGKILL"
    assert all(rows[n]["state"] == "running" for n in survivors)

    # The two survivors elect a leader with a higher term and take writes.
    second = _wait("a new leader", lambda: dev.leader())
    assert second in survivors and dev.status()[second]["term"] > term0
    written = {f"k{i}": f"v{i}" for i in range(20)}
    for i, (k, v) in enumerate(written.items()):
        url = dev.urls[survivors[i % 2]]
        _wait(f"PUT {k}", lambda url=url, k=k, v=v: _put(
            url, f"api/v1/namespaces/staging/config/{k}", {"value": v}).is_success)
    assert dev.status()[first]["state"] == "stopped", "nothing restarts a node on its own"

    r = dev.cli("start", first)
    assert r.returncode == 0, r.stderr
    assert dev.status()[first]["state"] == "running"
    _wait(f"{first} to catch up", lambda: _values(dev.urls[first], "staging") == written)
    for n in survivors:
        assert _values(dev.urls[n], "staging") == written


def test_node_dying_outside_the_tool_is_reported_and_the_rest_keep_running(dev: Dev) -> None:
    victim = "node2"
    pid = dev.status()[victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait("the death to be reported", lambda: "DIED (killed by SIGKILL)" in dev.output())
    rows = dev.status()
    assert rows[victim]["state"] == "stopped"
    assert dev.proc.poll() is None, "confman dev keeps running"
    assert all(rows[n]["state"] == "running" for n in ("node1", "node3"))
    _wait("a leader among the others", lambda: dev.leader() in ("node1", "node3"))
    assert _put(dev.urls["node1"], "api/v1/namespaces/after", {"description": "x"}).is_success

    r = dev.cli("restart", victim)
    assert r.returncode == 0, r.stderr
    _wait(f"{victim} to catch up", lambda: httpx.get(
        dev.urls[victim] + "api/v1/namespaces/after", headers=ADMIN, timeout=5).status_code == 200)


def test_bad_requests_get_clear_errors(dev: Dev) -> None:
    r = dev.cli("kill", "node9")
    assert r.returncode != 0 and "unknown node 'node9'" in r.stderr
    r = dev.cli("start", "node1")
    assert r.returncode != 0 and "node1 is already running" in r.stderr
    second = Dev(dev.root)  # a second supervisor on the same directory refuses to start
    try:
        assert second.proc.wait(30) != 0
        assert "already running" in second.output()
    finally:
        second.close()


def test_ctrl_c_stops_every_node(dev: Dev) -> None:
    pids = [row["pid"] for row in dev.status().values()]
    dev.close()
    assert dev.proc.returncode == 0
    for pid in pids:
        _wait(f"pid {pid} to exit", lambda pid=pid: not _alive(pid), 15)
    assert "all nodes stopped" in dev.output()
    assert not (dev.root / "control.sock").exists()
    r = dev.cli("status")
    assert r.returncode != 0 and "no dev cluster is running" in r.stderr


def test_node_files_are_private(dev: Dev) -> None:
    for name in dev.urls:
        for path in (dev.root / name, dev.root / f"{name}.toml", dev.root / "cluster-secret"):
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        for path in (dev.root / name).rglob("*"):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
