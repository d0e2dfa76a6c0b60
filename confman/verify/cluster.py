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

This module holds `ProcessCluster`'s set-up, node configs and processes; beside it are
``cluster_base`` (errors, `Node`, ports, the TOML writer), ``cluster_tls`` (test
certificates), ``cluster_links`` (cutting links) and ``cluster_watch`` (readiness, waiting,
logs); every public name stays importable from here.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from confman.node.config import hash_key
from confman.verify.cluster_base import (
    ClusterError,
    Node,
    NodeCrashed,
    die_with_parent,
    free_ports,
    merge,
    to_toml,
)
from confman.verify.cluster_links import LinkControl
from confman.verify.cluster_tls import (
    API_TLS_ENV,
    PEER_TLS_ENV,
    api_ca_file,
    api_client_context,
    issue_api_cert,
    issue_peer_certs,
)
from confman.verify.cluster_watch import ClusterWatch
from confman.verify.proxy import LinkProxy, ProxyThread

_LIVE: weakref.WeakSet[ProcessCluster] = weakref.WeakSet()


class ProcessCluster(LinkControl, ClusterWatch):
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
                merge(doc, extra or {})
                merge(doc, (node_extra or {}).get(nid, {}))
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
        issue_peer_certs(self.base_dir / "peer-tls", self.ids)

    def _api_tls(self) -> dict[str, Any]:
        if not self.api_tls:
            return {}
        return {"tls": {"cert_file": str(self.api_cert_file), "key_file": str(self.api_key_file)}}

    def issue_api_cert(self, common_name: str = "confman test node") -> None:
        """(Re)write the nodes' API certificate and key, issued by the test CA for 127.0.0.1
        and localhost (running nodes load them on SIGHUP)."""
        issue_api_cert(self.api_cert_file, self.api_key_file, common_name)

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
    "die_with_parent",
    "free_ports",
    "to_toml",
]
