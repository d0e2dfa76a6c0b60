"""Real-process cluster control: N `confman serve` processes on loopback behind link proxies.

Every node's ``[[members]]`` list points each OTHER node's raft address at the `LinkProxy`
of that directed link, so each direction of each link can be cut on its own::

    with ProcessCluster(3, tmp_path) as c:
        c.start_all()
        leader = c.wait_leader()
        c.isolate(leader)
        ...

`close()` always SIGKILLs every process and stops every proxy; an ``atexit`` hook does the
same for clusters that were never closed. Node output goes to ``<base>/<node>/node.log``.

``ProcessCluster(..., proxies=False)`` points members straight at each other's raft port (no
proxy hop, for benchmarks); the link methods (`cut`, `partition`, `latency`, ...) then raise.

``ProcessCluster(..., api_tls=True)`` (default: ``$CONFMAN_TEST_API_TLS=1``) serves the API
over HTTPS with a certificate from a test CA (``trustme``) shared by the whole process:
`api_ca_file` is its PEM; nodes trust it for forwarding, clients pass it or
``SSL_CERT_FILE``.

``ProcessCluster(..., peer_tls=True)`` (default: ``$CONFMAN_TEST_PEER_TLS=1``) runs every
peer link over mutual TLS (``[raft.tls]``): a CA of the cluster's own (``trustme``, imported
only then) issues each node a certificate for 127.0.0.1 under ``<base>/peer-tls/``. The link
proxies carry the TLS bytes as they carry plain ones.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from confman.node.config import hash_key
from confman.verify.proxy import LinkProxy, Mode, ProxyThread

_T = TypeVar("_T")
_LIVE: weakref.WeakSet[ProcessCluster] = weakref.WeakSet()
_PORT_LOCK = threading.Lock()
_HANDED_OUT: set[int] = set()
_POLL_NOISE = re.compile(r"access: GET /health|\"path\": ?\"/health")
API_TLS_ENV = "CONFMAN_TEST_API_TLS"
PEER_TLS_ENV = "CONFMAN_TEST_PEER_TLS"
_API_CA: list[Any] = []  # [trustme.CA, Path of its PEM], made on first use


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
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: Mapping[str, Any], _prefix: str = "") -> str:
    """A small TOML writer: scalars, arrays, tables and arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, list[Mapping[str, Any]]]] = []
    for k, v in doc.items():
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            arrays.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        out += f"\n[{_prefix}{k}]\n" + to_toml(v, f"{_prefix}{k}.")
    for k, items in arrays:
        for item in items:
            out += f"\n[[{_prefix}{k}]]\n" + to_toml(item, f"{_prefix}{k}.")
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
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


class ProcessCluster:
    """N `confman serve` processes with a proxy on every directed peer link."""

    def __init__(
        self,
        n: int = 3,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        ports: Sequence[tuple[int, int]] | None = None,
        election_timeout_ms: tuple[int, int] = (150, 300),
        snapshot_interval: int = 10_000,
        replication_timeout_ms: int | None = None,
        extra: Mapping[str, Any] | None = None,
        node_extra: Mapping[str, Mapping[str, Any]] | None = None,
        log_level: str = "info",
        env: Mapping[str, str] | None = None,
        proxies: bool = True,
        api_tls: bool | None = None,
        peer_tls: bool | None = None,
        node_command: Sequence[str] | None = None,
    ) -> None:
        """``node_command``: the argv before ``serve --config ...`` that starts a node
        (default ``python -m confman``; tests start deliberately broken nodes with it)."""
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="confman-cluster-")).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.election_timeout_ms = election_timeout_ms
        self.proxies = proxies
        self.ids = [f"node{i + 1}" for i in range(n)]
        self.api_tls = os.environ.get(API_TLS_ENV) == "1" if api_tls is None else api_tls
        self.peer_tls = os.environ.get(PEER_TLS_ENV) == "1" if peer_tls is None else peer_tls
        scheme = "https" if self.api_tls else "http"
        if ports is None:
            flat = free_ports(2 * n)
            ports = [(flat[2 * i], flat[2 * i + 1]) for i in range(n)]
        if len(ports) != n:
            raise ValueError(f"ports: expected {n} (http, raft) pairs, got {len(ports)}")
        self.nodes: dict[str, Node] = {}
        for nid, (hp, rp) in zip(self.ids, ports, strict=True):
            d = self.base_dir / nid
            d.mkdir(parents=True, exist_ok=True)
            self.nodes[nid] = Node(nid, hp, rp, d, d / "node.toml", d / "node.log", scheme=scheme)
        self.secret = secrets.token_hex(24)
        self.keys = {
            "admin": "confman_admin_" + secrets.token_urlsafe(24),
            "viewer": "confman_viewer_" + secrets.token_urlsafe(24),
        }
        self._env = dict(env or {})
        self.node_command = list(node_command or (sys.executable, "-m", "confman"))
        #: With api_tls: the CA PEM, and the certificate and key every node serves.
        self.api_ca_file: Path | None = None
        self.api_cert_file = self.base_dir / "api-tls" / "cert.pem"
        self.api_key_file = self.base_dir / "api-tls" / "key.pem"
        verify: Any = True
        if self.api_tls:
            self.api_ca_file = api_ca_file()
            self.issue_api_cert()
            self._env.setdefault("SSL_CERT_FILE", str(self.api_ca_file))  # for forwarding
            verify = api_client_context()
        self._closed = False
        self._lock = threading.RLock()
        self.http = httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0), verify=verify)
        self._proxy_thread = ProxyThread()
        #: (a, b) -> the proxy that carries a's connections to b.
        self.links: dict[tuple[str, str], LinkProxy] = {}
        _LIVE.add(self)
        try:
            if self.peer_tls:
                self._issue_peer_certs()
            for a, b in itertools.permutations(self.ids, 2) if proxies else ():
                self.links[(a, b)] = self._proxy_thread.proxy(
                    ("127.0.0.1", self.nodes[b].raft_port), name=f"{a}->{b}"
                )
            for nid in self.ids:
                doc = self._config(
                    nid,
                    election_timeout_ms,
                    snapshot_interval,
                    replication_timeout_ms,
                    log_level,
                )
                _merge(doc, extra or {})
                _merge(doc, (node_extra or {}).get(nid, {}))
                self.nodes[nid].config_path.write_text(to_toml(doc), encoding="utf-8")
        except BaseException:
            self.close()
            raise

    def _config(
        self,
        nid: str,
        election: tuple[int, int],
        snapshot_interval: int,
        replication_timeout_ms: int | None,
        log_level: str,
    ) -> dict[str, Any]:
        me = self.nodes[nid]
        members = []
        for other in self.ids:
            link = self.links.get((nid, other))
            raft_port = link.port if link is not None else self.nodes[other].raft_port
            members.append(
                {"id": other, "raft": f"127.0.0.1:{raft_port}", "http": self.nodes[other].url}
            )
        raft: dict[str, Any] = {
            "listen": f"127.0.0.1:{me.raft_port}",
            "election_timeout_ms": list(election),
            "snapshot_interval": snapshot_interval,
        }
        if replication_timeout_ms is not None:
            raft["replication_timeout_ms"] = replication_timeout_ms
        if self.peer_tls:
            d = self.base_dir / "peer-tls"
            raft["tls"] = {
                "cert_file": str(d / f"{nid}.pem"),
                "key_file": str(d / f"{nid}.key"),
                "ca_file": str(d / "ca.pem"),
            }
        return {
            "node_id": nid,
            "data_dir": str(me.data_dir),
            "profile": "prod",
            "cluster_secret": self.secret,
            "http": {"listen": f"127.0.0.1:{me.http_port}", "advertise": me.url, **self._api_tls()},
            "raft": raft,
            "log": {"level": log_level, "format": "text"},
            "members": members,
            "api_keys": [
                {
                    "name": "Cluster Admin",
                    "key_sha256": hash_key(self.keys["admin"]),
                    "roles": ["admin"],
                },
                {
                    "name": "Cluster Viewer",
                    "key_sha256": hash_key(self.keys["viewer"]),
                    "roles": ["viewer"],
                },
            ],
        }

    def _issue_peer_certs(self) -> None:
        """A CA for this cluster's peer links and a certificate per node, in ``peer-tls/``."""
        try:
            import trustme  # a test dependency: only peer_tls clusters need it
        except ImportError:
            raise ClusterError("peer_tls needs trustme (pip install confman[dev])") from None
        d = self.base_dir / "peer-tls"
        d.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="confman test peers")
        ca.cert_pem.write_to_path(str(d / "ca.pem"))
        for nid in self.ids:
            cert = ca.issue_cert("127.0.0.1", "localhost", nid)
            for i, pem in enumerate(cert.cert_chain_pems):
                pem.write_to_path(str(d / f"{nid}.pem"), append=i > 0)
            key = d / f"{nid}.key"
            key.touch(mode=0o600)
            cert.private_key_pem.write_to_path(str(key))

    def _api_tls(self) -> dict[str, Any]:
        if not self.api_tls:
            return {}
        return {"tls": {"cert_file": str(self.api_cert_file), "key_file": str(self.api_key_file)}}

    def issue_api_cert(self, common_name: str = "confman test node") -> None:
        """(Re)write the nodes' API certificate and key, issued by the test CA for 127.0.0.1
        and localhost (running nodes load them on SIGHUP)."""
        cert = _api_ca().issue_cert("127.0.0.1", "localhost", common_name=common_name)
        self.api_cert_file.parent.mkdir(parents=True, exist_ok=True)
        cert.private_key_pem.write_to_path(str(self.api_key_file))
        self.api_key_file.chmod(0o600)
        cert.cert_chain_pems[0].write_to_path(str(self.api_cert_file))

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every process, stop every proxy and the HTTP client (idempotent, never raises)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                self._kill_proc(node)
        with contextlib.suppress(Exception):
            self._proxy_thread.close()
        with contextlib.suppress(Exception):
            self.http.close()
        _LIVE.discard(self)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------ processes
    def node(self, nid: str) -> Node:
        try:
            return self.nodes[nid]
        except KeyError:
            raise KeyError(f"no node {nid!r} (nodes: {', '.join(self.ids)})") from None

    def url(self, nid: str) -> str:
        """The node's HTTP base URL, with a trailing slash."""
        return self.node(nid).url

    def node_of_url(self, url: str | None) -> str | None:
        """The node whose advertised URL is ``url``."""
        if not url:
            return None
        norm = url.rstrip("/") + "/"
        return next((n.id for n in self.nodes.values() if n.url == norm), None)

    def auth(self, role: str = "admin") -> dict[str, str]:
        """Headers carrying the API key of ``role`` (``admin`` or ``viewer``)."""
        return {"X-Api-Key": self.keys[role]}

    def start(self, nid: str) -> None:
        """Start the node's process (no-op if it runs); returns at once."""
        if self._closed:
            raise ClusterError("cluster is closed")
        node = self.node(nid)
        if node.running:
            return
        node.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFMAN_")}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.update(self._env)
        with node.log_path.open("ab") as log:
            banner = f"\n===== harness: start #{node.starts} of {nid} at {time.time():.3f} =====\n"
            log.write(banner.encode())
            log.flush()
            main_thread = threading.current_thread() is threading.main_thread()
            node.proc = subprocess.Popen(
                [*self.node_command, "serve", "--config", str(node.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.dir,
                env=env,
                # PDEATHSIG fires when the forking *thread* exits: only safe from the main one.
                preexec_fn=die_with_parent if main_thread and sys.platform == "linux" else None,
            )
        node.paused = False
        node.expect_down = False

    def start_all(self, order: Iterable[str] | None = None, *, one_by_one: bool = False) -> None:
        """Start every node (in ``order``); ``one_by_one`` waits for each to answer HTTP first."""
        for nid in order or self.ids:
            self.start(nid)
            if one_by_one:
                self.wait_up(nid)

    def _kill_proc(self, node: Node) -> None:
        node.expect_down = True
        p = node.proc
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        node.paused = False

    def kill(self, nid: str) -> None:
        """SIGKILL the node and reap it."""
        self._kill_proc(self.node(nid))

    def stop(self, nid: str, timeout: float = 15.0) -> int | None:
        """SIGTERM the node and wait for it to exit (SIGKILL after ``timeout``); its exit code."""
        node = self.node(nid)
        p = node.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        node.expect_down = True
        if node.paused:
            self.resume(nid)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_proc(node)
            raise ClusterError(
                f"{nid} did not exit within {timeout}s of SIGTERM (killed)\n{self.log_tail(nid)}"
            ) from None

    def stop_all(self) -> None:
        for nid in self.ids:
            self.stop(nid)

    def kill_all(self) -> None:
        for nid in self.ids:
            self.kill(nid)

    def restart(self, nid: str, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) and start the node again."""
        if kill:
            self.kill(nid)
        else:
            self.stop(nid)
        self.start(nid)

    def pause(self, nid: str) -> None:
        """SIGSTOP the node: alive but silent."""
        node = self.node(nid)
        if not node.running:
            raise ClusterError(f"{nid} is not running")
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, nid: str) -> None:
        """SIGCONT a paused node."""
        node = self.node(nid)
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    def wipe(self, nid: str) -> None:
        """Delete the node's data directory (the node must not run)."""
        if self.node(nid).running:
            raise ClusterError(f"cannot wipe {nid} while it runs")
        shutil.rmtree(self.node(nid).data_dir, ignore_errors=True)

    def running(self) -> list[str]:
        """Nodes whose process is alive and not paused."""
        return [n.id for n in self.nodes.values() if n.running and not n.paused]

    def check_alive(self) -> None:
        """Raise `NodeCrashed` if a node the harness started has exited by itself."""
        for node in self.nodes.values():
            p = node.proc
            if p is not None and not node.expect_down and p.poll() is not None:
                raise NodeCrashed(
                    f"{node.id} exited with code {p.returncode}\n{self.log_tail(node.id)}"
                )

    def forget_exit(self, nid: str) -> None:
        """Acknowledge that the node exited by itself (tests that expect a crash)."""
        self.node(nid).expect_down = True

    # ------------------------------------------------------------------ network
    def _need_proxies(self) -> None:
        if not self.proxies:
            raise ClusterError("this cluster was built with proxies=False: links cannot be cut")

    def set_link(self, a: str, b: str, mode: Mode, *, latency_ms: float | None = None) -> None:
        """Set the mode (and latency) of the directed link a → b."""
        self._need_proxies()
        self.links[(self.node(a).id, self.node(b).id)].set_mode(mode, latency_ms=latency_ms)

    def cut(self, a: str, b: str, mode: Mode = "drop") -> None:
        """Cut one direction: a's connections to b."""
        self.set_link(a, b, mode)

    def partition(
        self, group_a: Iterable[str], group_b: Iterable[str] | None = None, mode: Mode = "drop"
    ) -> None:
        """Cut every link between the groups, both ways (``group_b`` defaults to the rest)."""
        ga = list(group_a)
        gb = [n for n in self.ids if n not in ga] if group_b is None else list(group_b)
        for a in ga:
            for b in gb:
                self.set_link(a, b, mode)
                self.set_link(b, a, mode)

    def isolate(self, nid: str, mode: Mode = "drop") -> None:
        """Cut the node off from every other node, both ways."""
        self.partition([nid], mode=mode)

    def bridge(
        self,
        group_a: Iterable[str] | None = None,
        middle: str | None = None,
        group_b: Iterable[str] | None = None,
    ) -> None:
        """Two halves that cannot talk, joined only through ``middle``, which sees both.

        Defaults split the nodes in order: ``node1,node2 | node3 | node4,node5`` for five.
        """
        ids = list(self.ids)
        mid = middle or ids[len(ids) // 2]
        rest = [n for n in ids if n != mid]
        ga = list(group_a) if group_a is not None else rest[: len(rest) // 2]
        gb = list(group_b) if group_b is not None else [n for n in rest if n not in ga]
        self.heal()
        self.partition(ga, gb)

    def heal(self) -> None:
        """Every link back to ``pass`` without added latency."""
        for p in self.links.values():
            p.set_mode("pass", latency_ms=0, jitter_ms=0)

    def latency(self, ms: float, links: Iterable[tuple[str, str]] | None = None) -> None:
        """Add latency to the given links (default all), keeping their mode."""
        self._need_proxies()
        for key in links or list(self.links):
            p = self.links[key]
            p.set_mode(p.mode, latency_ms=ms)

    def request(
        self,
        nid: str,
        method: str,
        path: str,
        *,
        role: str | None = "admin",
        follow: bool = False,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> httpx.Response:
        """An HTTP request to the node (``path`` relative to its URL) with ``role``'s key."""
        headers = {**(self.auth(role) if role else {}), **kwargs.pop("headers", {})}
        return self.http.request(
            method,
            self.url(nid) + path.lstrip("/"),
            headers=headers,
            follow_redirects=follow,
            timeout=timeout,
            **kwargs,
        )

    # ------------------------------------------------------------------ observation
    def health(self, nid: str, timeout: float = 1.0) -> bool:
        """True if the node answers ``GET /health`` with 200."""
        try:
            return self.http.get(self.url(nid) + "health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self, nid: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """``GET /health/ready`` JSON (200 or 503 alike), or None if the node does not answer.

        The HTTP status is added as ``httpStatus``.
        """
        try:
            r = self.http.get(self.url(nid) + "health/ready", timeout=timeout)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        body["httpStatus"] = r.status_code
        return body

    def statuses(self, nodes: Iterable[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """`status` of each node (default: every running, unpaused node)."""
        return {n: self.status(n) for n in (self.running() if nodes is None else nodes)}

    def leaders(self, nodes: Iterable[str] | None = None, *, ready: bool = True) -> dict[str, int]:
        """Nodes that report themselves leader (and ready, if asked), with their term."""
        out: dict[str, int] = {}
        for nid, st in self.statuses(nodes).items():
            c = (st or {}).get("cluster") or {}
            is_ready = st is not None and st.get("status") == "ready"
            if c.get("role") == "leader" and (is_ready or not ready):
                out[nid] = int(c.get("term", 0))
        return out

    def leader(self, nodes: Iterable[str] | None = None) -> str | None:
        """The ready leader with the highest term, or None."""
        ls = self.leaders(nodes)
        return max(ls, key=lambda n: ls[n]) if ls else None

    def describe(self) -> str:
        """One line per node: process state and readiness, for error messages."""
        lines = []
        for nid, node in self.nodes.items():
            if node.proc is None:
                state = "never started"
            elif node.proc.poll() is not None:
                state = f"exited({node.proc.returncode})"
            else:
                state = "paused" if node.paused else "running"
            st = self.status(nid, timeout=0.3) if state == "running" else None
            c = (st or {}).get("cluster") or {}
            lines.append(
                f"  {nid} [{state}] "
                + (
                    f"{st.get('status')} role={c.get('role')} term={c.get('term')} "
                    f"leader={self.node_of_url(c.get('leader'))} commit={c.get('commitIndex')} "
                    f"applied={c.get('appliedIndex')}"
                    if st
                    else "-"
                )
            )
        down = [f"{a}->{b}:{p.mode}" for (a, b), p in self.links.items() if p.mode != "pass"]
        if down:
            lines.append("  links not passing: " + ", ".join(down))
        return "\n".join(lines)

    def wait_for(
        self,
        predicate: Callable[[], _T],
        timeout: float = 10.0,
        interval: float = 0.05,
        what: str = "",
        *,
        check_alive: bool = True,
    ) -> _T:
        """Poll ``predicate`` until it returns a truthy value (returned), or raise on deadline.

        Exceptions from the predicate count as "not yet"; the error names the last value or
        exception, and the cluster state. Raises `NodeCrashed` at once if a node died.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        last_exc: BaseException | None = None
        while True:
            if check_alive:
                self.check_alive()
            try:
                value = predicate()
                last_exc = None
                if value:
                    return value
                last = value
            except (httpx.HTTPError, AssertionError, KeyError, ValueError, TypeError) as exc:
                if isinstance(exc, NodeCrashed):
                    raise
                last_exc = exc
            if time.monotonic() >= deadline:
                seen = f"{type(last_exc).__name__}: {last_exc}" if last_exc else repr(last)
                raise ClusterError(
                    f"timed out after {timeout:.1f}s waiting for {what or repr(predicate)}\n"
                    f"last observed: {seen}\ncluster:\n{self.describe()}"
                )
            time.sleep(interval)

    def wait_up(self, nid: str, timeout: float = 20.0) -> None:
        """Wait until the node's process answers ``GET /health``."""
        self.wait_for(lambda: self.health(nid, 0.5), timeout, 0.05, f"{nid} to answer /health")

    def wait_leader(
        self,
        nodes: Iterable[str] | None = None,
        timeout: float = 10.0,
        *,
        min_term: int = 0,
        not_: Iterable[str] = (),
    ) -> str:
        """Wait for a ready leader among ``nodes`` (default: running ones); its id."""
        group = None if nodes is None else list(nodes)
        excluded = set(not_)

        def found() -> str | None:
            ls = {
                n: t for n, t in self.leaders(group).items() if t >= min_term and n not in excluded
            }
            return max(ls, key=lambda n: ls[n]) if ls else None

        return self.wait_for(found, timeout, 0.02, "a ready leader")

    def wait_ready(self, nodes: Iterable[str] | None = None, timeout: float = 15.0) -> None:
        """Wait until every given node (default all) reports ``ready`` with the same leader."""
        group = list(nodes or self.ids)

        def ok() -> bool:
            sts = self.statuses(group)
            leaders = {((s or {}).get("cluster") or {}).get("leader") for s in sts.values()}
            return all(s and s["status"] == "ready" for s in sts.values()) and len(leaders) == 1

        self.wait_for(ok, timeout, 0.05, f"{', '.join(group)} ready with one leader")

    # ------------------------------------------------------------------ logs
    def log_tail(self, nid: str, lines: int = 60) -> str:
        """The last lines of the node's log, without the harness's own health polls."""
        try:
            text = self.node(nid).log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"--- {nid}: no log ---"
        kept = [ln for ln in text.splitlines() if not _POLL_NOISE.search(ln)]
        tail = kept[-lines:]
        return f"--- {nid} log (last {len(tail)} lines, health polls left out) ---\n" + "\n".join(
            tail
        )

    def logs(self, lines: int = 60) -> str:
        """The tail of every node's log."""
        return "\n".join(self.log_tail(n, lines) for n in self.ids)

    def grep_log(self, nid: str, needle: str) -> list[str]:
        """Lines of the node's log (all its runs) that contain ``needle``."""
        try:
            text = self.node(nid).log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if needle in ln]


def _api_ca() -> Any:
    if not _API_CA:
        import trustme  # a test dependency: only api_tls clusters need it

        ca = trustme.CA()
        path = Path(tempfile.mkdtemp(prefix="confman-test-ca-")) / "ca.pem"
        ca.cert_pem.write_to_path(str(path))
        _API_CA.extend([ca, path])
    return _API_CA[0]


def api_ca_file() -> Path:
    """The PEM of the test CA behind every ``api_tls`` cluster of this process."""
    _api_ca()
    return Path(_API_CA[1])


def api_client_context() -> Any:
    """An ``ssl.SSLContext`` for clients that trusts the test CA."""
    import ssl

    return ssl.create_default_context(cafile=str(api_ca_file()))


@atexit.register
def _close_all() -> None:  # pragma: no cover - exercised only when a caller forgot close()
    for c in list(_LIVE):
        c.close()


__all__ = [
    "API_TLS_ENV",
    "PEER_TLS_ENV",
    "ClusterError",
    "Node",
    "NodeCrashed",
    "ProcessCluster",
    "api_ca_file",
    "api_client_context",
    "free_ports",
    "to_toml",
]
