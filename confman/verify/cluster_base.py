"""What the process-cluster modules share: the errors, `Node`, free ports, the TOML writer.

`free_ports` picks ports below the ephemeral range, so a restarted node can always bind its
own again; `to_toml` writes a node's configuration with ``tomli_w``; `die_with_parent` runs
in each node's child process so that no node outlives its harness.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "ClusterError",
    "Node",
    "NodeCrashed",
    "die_with_parent",
    "free_ports",
    "merge",
    "to_toml",
]

_PORT_LOCK = threading.Lock()
_HANDED_OUT: set[int] = set()


class ClusterError(AssertionError):
    """A cluster did not reach the expected state; the message carries what was observed."""


class NodeCrashed(ClusterError):
    """A node that should be running has exited."""


# ---------------------------------------------------------------------------------- ports
def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that can be bound now, chosen below the ephemeral range.

    Outside the ephemeral range no outgoing connection can borrow a port while its node is
    down, so a restarted node can always bind it again.
    """
    lo_eph, _ = _ephemeral_range()
    lo, hi = (20000, lo_eph - 1) if lo_eph > 21000 else (40000, 65000)
    rng = random.Random()
    out: list[int] = []
    with _PORT_LOCK:
        for _ in range(50 * n + 200):
            if len(out) == n:
                break
            port = rng.randint(lo, hi)
            if port in out or port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            out.append(port)
        if len(out) < n:
            raise OSError(f"could not find {n} free ports in {lo}-{hi}")
        _HANDED_OUT.update(out)
    return out


# ---------------------------------------------------------------------------------- TOML
def to_toml(doc: Mapping[str, Any]) -> str:
    """``doc`` as TOML (``tomli_w``): scalars, arrays, tables and arrays of tables."""
    return tomli_w.dumps(doc)


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


# ---------------------------------------------------------------------------------- nodes
@dataclass(slots=True)
class Node:
    """One member: its ports and files, and its process when running."""

    id: str
    http_port: int
    raft_port: int
    dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    expect_down: bool = True  # stopped or killed by the harness (or never started)
    scheme: str = "http"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}/"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Make the child die with the parent thread (Linux), so no node outlives its harness."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
