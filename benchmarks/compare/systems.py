"""The two systems under test: a Confman and an etcd 3-node cluster on loopback.

Both expose the same small surface to the runner: member URLs, the current leader, the wrk
script and its arguments, one-off HTTP writes/reads (pre-loading, failover probes), process
ids (memory), the Raft term (elections during a run), and kill/restart of a member.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from benchmarks.bench_failover import ensure_namespace, wait_settled
from confman.verify.cluster import ProcessCluster, die_with_parent, free_ports

LUA_DIR = Path(__file__).resolve().parent / "lua"
NS = "bench"  # the namespace bench_failover also uses
#: etcd's backend quota: its default (2 GiB) fills up during a full run, because etcd keeps
#: every revision until compaction; raising it changes capacity, not speed.
ETCD_QUOTA = 8 * 1024**3


def key_name(i: int) -> str:
    """The i-th benchmark key, as the Lua scripts name it."""
    return f"k{i:06d}"


def value_of(i: int, size: int) -> str:
    """The value the Lua scripts write for key i (printable, ``size`` bytes)."""
    filler = "abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 2)
    return (key_name(i) + "-" + filler)[:size]


def b64(s: str) -> str:
    """Standard base64 of a UTF-8 string (etcd's JSON gateway carries bytes so)."""
    return base64.b64encode(s.encode()).decode()


@dataclass(frozen=True, slots=True)
class Req:
    """One HTTP request as the Python drivers send it."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


class System(Protocol):
    """What the runner needs from a cluster."""

    name: str

    def start(self) -> None: ...
    def close(self) -> None: ...
    def urls(self) -> list[str]: ...
    def leader_url(self) -> str: ...
    def wrk_script(self) -> Path: ...
    def wrk_args(self, read: str, forward: bool) -> list[str]: ...
    def request(self, url: str, op: str, i: int, size: int, read: str, forward: bool) -> Req: ...
    def pids(self) -> dict[str, int]: ...
    def term(self) -> int: ...
    def version(self) -> str: ...
    def failover_trial(self, n: int) -> float: ...
    def wait_healthy(self, timeout: float = 60.0) -> str: ...


# ---------------------------------------------------------------------------------- Confman
class ConfmanSystem:
    """Confman through `ProcessCluster(proxies=False)`, logging at ``log_level``."""

    name = "confman"

    def __init__(self, base: Path, log_level: str = "warning") -> None:
        self.c = ProcessCluster(3, base / "confman", proxies=False, log_level=log_level)
        self.http = httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5))
        self.headers = {"X-Api-Key": self.c.keys["admin"], "Content-Type": "application/json"}

    def start(self) -> None:
        """Start every node, wait for a settled leader and create the namespace."""
        self.c.start_all()
        self.c.wait_leader(timeout=60)
        ensure_namespace(self.c, self.http)
        wait_settled(self.c)

    def close(self) -> None:
        """Kill every node (idempotent)."""
        with contextlib.suppress(Exception):
            self.http.close()
        self.c.close()

    def urls(self) -> list[str]:
        """Member URLs, leader first."""
        lead = self.leader_url()
        return [lead] + [
            self.c.url(n).rstrip("/") for n in self.c.ids if self.c.url(n) != lead + "/"
        ]

    def leader_url(self) -> str:
        """The current ready leader's base URL (waits up to 30 s for one)."""
        return self.c.url(self.c.wait_leader(timeout=30)).rstrip("/")

    def wrk_script(self) -> Path:
        return LUA_DIR / "confman.lua"

    def wrk_args(self, read: str, forward: bool) -> list[str]:
        return [
            f"ns={NS}",
            f"apikey={self.c.keys['admin']}",
            f"read={read}",
            f"forward={int(forward)}",
        ]

    def request(self, url: str, op: str, i: int, size: int, read: str, forward: bool) -> Req:
        path = f"{url}/api/v1/namespaces/{NS}/config/{key_name(i)}"
        if op == "write":
            body = json.dumps({"value": value_of(i, size)}).encode()
            return Req("PUT", path + ("?forward=true" if forward else ""), body, self.headers)
        q = "?consistency=linearizable" if read == "linearizable" else ""
        return Req("GET", path + q, None, self.headers)

    def pids(self) -> dict[str, int]:
        return {n: node.proc.pid for n, node in self.c.nodes.items() if node.proc and node.running}

    def term(self) -> int:
        terms = [
            ((s or {}).get("cluster") or {}).get("term", 0) for s in self.c.statuses().values()
        ]
        return max([int(t) for t in terms] or [0])

    def applied_equal(self) -> bool:
        """Every node has applied the same index."""
        idx = {
            ((s or {}).get("cluster") or {}).get("appliedIndex")
            for s in self.c.statuses(self.c.ids).values()
        }
        return len(idx) == 1 and None not in idx

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("confman")
        except Exception:  # pragma: no cover - not installed as a distribution
            return "unknown"

    def wait_healthy(self, timeout: float = 60.0) -> str:
        """Every node ready with one leader and the same applied index; the leader's URL."""
        return self.c.url(wait_settled(self.c, timeout=timeout)).rstrip("/")

    def failover_trial(self, n: int) -> float:
        """kill -9 of the leader -> first 2xx write (bench_failover's trial), seconds."""
        from benchmarks.bench_failover import failover_trial

        t = failover_trial(self.c, self.http, n)
        wait_settled(self.c, timeout=60)
        return t.seconds


# ---------------------------------------------------------------------------------- etcd
@dataclass(slots=True)
class EtcdMember:
    """One etcd process: its name, ports, data dir and process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


def ensure_etcd(say: Callable[[str], None] = print) -> str:
    """Path of the etcd binary; installs Debian's etcd-server/etcd-client if it is missing."""
    path = shutil.which("etcd")
    if path:
        return path
    say("etcd not found: installing it with apt-get install -y etcd-server etcd-client ...")
    subprocess.run(["apt-get", "install", "-y", "etcd-server", "etcd-client"], check=True)
    path = shutil.which("etcd")
    if not path:
        raise RuntimeError("etcd is still missing after apt-get install etcd-server")
    return path


class EtcdSystem:
    """A fresh 3-member etcd cluster with default timing and fsync, JSON gateway on /v3."""

    name = "etcd"

    def __init__(self, base: Path, binary: str = "etcd") -> None:
        self.binary = binary
        self.dir = base / "etcd"
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)
        self.members = [
            EtcdMember(
                f"e{i + 1}",
                ports[2 * i],
                ports[2 * i + 1],
                self.dir / f"e{i + 1}",
                self.dir / f"e{i + 1}.log",
            )
            for i in range(3)
        ]
        self.http = httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5))
        self.headers = {"Content-Type": "application/json"}
        self._ids: dict[str, str] = {}  # member id (decimal string) -> url

    def _cmd(self, m: EtcdMember) -> list[str]:
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-token", "confman-compare",
            "--initial-cluster-state", "new", "--quota-backend-bytes", str(ETCD_QUOTA),
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip

    def _start_member(self, m: EtcdMember) -> None:
        with m.log_path.open("ab") as log:
            main_thread = threading.current_thread() is threading.main_thread()
            m.proc = subprocess.Popen(
                self._cmd(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # as for Confman's nodes: no etcd outlives a runner that was killed
                preexec_fn=die_with_parent if main_thread and sys.platform == "linux" else None,
            )

    def start(self) -> None:
        """Start the three members and wait until all are healthy with one leader."""
        for m in self.members:
            self._start_member(m)
        self.wait_healthy(60)

    def close(self) -> None:
        """SIGKILL every member (idempotent)."""
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    m.proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self.http.close()

    def _post(self, url: str, path: str, body: dict[str, Any], timeout: float = 1.0) -> Any:
        r = self.http.post(url + path, json=body, timeout=timeout)
        r.raise_for_status()
        return r.json()

    def status(self, m: EtcdMember) -> dict[str, Any] | None:
        """``/v3/maintenance/status`` of the member, or None if it does not answer."""
        if m.proc is None or m.proc.poll() is not None:
            return None
        try:
            return dict(self._post(m.url, "/v3/maintenance/status", {}, 0.5))
        except (httpx.HTTPError, ValueError):
            return None

    def _leader(self, members: list[EtcdMember] | None = None) -> str | None:
        for m in members or self.members:
            st = self.status(m)
            if st is not None:
                self._ids[str(st["header"]["member_id"])] = m.url
        for m in members or self.members:
            st = self.status(m)
            if st is not None and str(st.get("leader", "0")) in self._ids:
                lead = self._ids[str(st["leader"])]
                if any(x.url == lead and x.proc and x.proc.poll() is None for x in self.members):
                    return lead
        return None

    def wait_healthy(self, timeout: float = 60.0) -> str:
        """Every member answers ``/health`` true, agrees on the leader and revision."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sts = [self.status(m) for m in self.members]
                ok = all(s is not None for s in sts)
                if ok:
                    leaders = {str(s["leader"]) for s in sts if s}
                    revs = {int(s["header"].get("revision", 0)) for s in sts if s}
                    healthy = all(
                        self.http.get(m.url + "/health", timeout=0.5).json().get("health") == "true"
                        for m in self.members
                    )
                    lead = self._leader()
                    if len(leaders) == 1 and len(revs) == 1 and healthy and lead:
                        return lead
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(
                    m.log_path.read_text(errors="replace")[-2000:] for m in self.members
                )
                raise RuntimeError(f"etcd cluster not healthy within {timeout}s\n{logs}")
            time.sleep(0.05)

    def urls(self) -> list[str]:
        lead = self.leader_url()
        return [lead] + [m.url for m in self.members if m.url != lead]

    def leader_url(self) -> str:
        deadline = time.monotonic() + 30
        while (lead := self._leader()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("etcd has no leader")
            time.sleep(0.05)
        return lead

    def wrk_script(self) -> Path:
        return LUA_DIR / "etcd.lua"

    def wrk_args(self, read: str, forward: bool) -> list[str]:
        return [f"read={'linearizable' if read == 'linearizable' else 'serializable'}"]

    def request(self, url: str, op: str, i: int, size: int, read: str, forward: bool) -> Req:
        k = b64(key_name(i))
        if op == "write":
            body = {"key": k, "value": b64(value_of(i, size))}
            return Req("POST", url + "/v3/kv/put", json.dumps(body).encode(), self.headers)
        rbody: dict[str, Any] = {"key": k}
        if read != "linearizable":
            rbody["serializable"] = True
        return Req("POST", url + "/v3/kv/range", json.dumps(rbody).encode(), self.headers)

    def pids(self) -> dict[str, int]:
        return {m.name: m.proc.pid for m in self.members if m.proc and m.proc.poll() is None}

    def term(self) -> int:
        terms = [int((s or {}).get("raftTerm", 0)) for s in map(self.status, self.members)]
        return max(terms or [0])

    def applied_equal(self) -> bool:
        """Every member is at the same revision."""
        sts = [self.status(m) for m in self.members]
        revs = {int(s["header"].get("revision", 0)) for s in sts if s}
        return None not in sts and len(revs) == 1

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return out.stdout.splitlines()[0].split(":", 1)[-1].strip() if out.stdout else "?"

    def failover_trial(self, n: int) -> float:
        """kill -9 of the leader -> first 2xx put, seconds; then restart it and wait healthy.

        Same method as bench_failover: alternate the survivors, 1 s timeout per attempt,
        10 ms pause after a failure.
        """
        lead_url = self.wait_healthy(60)
        victim = next(m for m in self.members if m.url == lead_url)
        survivors = [m for m in self.members if m is not victim]
        attempts = 0
        assert victim.proc is not None
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        while True:
            m = survivors[attempts % 2]
            attempts += 1
            try:
                body = {"key": b64(f"failover-{n}-{attempts}"), "value": b64("x")}
                r = self.http.post(m.url + "/v3/kv/put", json=body, timeout=1.0)
                if 200 <= r.status_code < 300 and "error" not in r.text[:200]:
                    took = time.monotonic() - t0
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 60:
                raise RuntimeError("etcd: no acknowledged write within 60 s of the kill")
            time.sleep(0.01)
        self._start_member(victim)
        self.wait_healthy(60)
        return took


def make_system(name: str, base: Path, confman_log: str = "warning") -> System:
    """A (not yet started) system by name."""
    if name == "confman":
        return ConfmanSystem(base, confman_log)
    if name == "etcd":
        return EtcdSystem(base, ensure_etcd())
    raise ValueError(f"unknown system {name!r} (confman, etcd)")


def keep_logs(base: Path, out: Path) -> list[Path]:
    """Copy every Confman node's log from ``base`` to ``out/logs/`` (before ``base`` goes)."""
    kept = []
    for log in sorted((base / "confman").glob("*/node.log")):
        dest = out / "logs" / f"{log.parent.name}.log"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, dest)
        kept.append(dest)
    return kept


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def temp_base() -> Path:
    """A fresh temporary directory for both clusters' data."""
    return Path(tempfile.mkdtemp(prefix="confman-compare-"))
