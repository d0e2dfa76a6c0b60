"""Helpers for the cluster tests: API calls through the harness, state dumps, convergence."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import httpx

from confman.verify.cluster import API_TLS_ENV, ProcessCluster, api_ca_file

#: Slack for timing assertions: HTTP polling and scheduling on two shared cores.
TOLERANCE_S = 0.4


def trust_api_ca() -> None:
    """With ``$CONFMAN_TEST_API_TLS=1``, make every default-verifying httpx client of this
    process (the helpers here, the tests' own, ``confman.client``) trust the test CA."""
    if os.environ.get(API_TLS_ENV) == "1":
        os.environ["SSL_CERT_FILE"] = str(api_ca_file())


def election_hi_s(c: ProcessCluster) -> float:
    return c.election_timeout_ms[1] / 1000


def ok(r: httpx.Response) -> bool:
    return 200 <= r.status_code < 300


def cluster_info(c: ProcessCluster, nid: str) -> dict[str, Any]:
    """The ``cluster`` object of the node's readiness body (raises if it does not answer)."""
    st = c.status(nid)
    assert st is not None, f"{nid} does not answer /health/ready"
    return dict(st["cluster"], status=st["status"], httpStatus=st["httpStatus"])


def boot(c: ProcessCluster, timeout: float = 20.0) -> str:
    """Start every node; the leader, once every node is ready and follows it."""
    c.start_all()
    leader = c.wait_leader(timeout=timeout)
    c.wait_ready(timeout=timeout)
    return leader


def seed(c: ProcessCluster, ns: str, values: dict[str, str]) -> dict[str, Any]:
    """Create ``ns`` with ``values`` and wait until every node has them; the state."""
    create_namespace(c, ns)
    for k, v in values.items():
        put_config(c, ns, k, v)
    return wait_converged(c)


def write(
    c: ProcessCluster,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    nodes: list[str] | None = None,
    timeout: float = 15.0,
) -> tuple[str, httpx.Response]:
    """Send a write to the nodes in turn (following redirects) until one is acknowledged.

    Only for setup steps whose outcome does not matter to the test: a retry after an
    ambiguous failure may apply the write twice.
    """
    targets = nodes or c.running()
    attempt = 0

    def once() -> tuple[str, httpx.Response]:
        nonlocal attempt
        nid = targets[attempt % len(targets)]
        attempt += 1
        r = c.request(nid, method, path, json=body, follow=True, timeout=5.0)
        assert ok(r), f"{nid}: {r.status_code} {r.text[:300]}"
        return nid, r

    return c.wait_for(once, timeout, 0.05, f"{method} {path} to succeed")


def create_namespace(c: ProcessCluster, ns: str, **kwargs: Any) -> None:
    write(c, "PUT", f"api/v1/namespaces/{ns}", body={"description": f"test {ns}"}, **kwargs)


def put_config(c: ProcessCluster, ns: str, key: str, value: str, **kwargs: Any) -> None:
    write(c, "PUT", f"api/v1/namespaces/{ns}/config/{key}", body={"value": value}, **kwargs)


def get_config(c: ProcessCluster, nid: str, ns: str, key: str) -> httpx.Response:
    return c.request(nid, "GET", f"api/v1/namespaces/{ns}/config/{key}", role="viewer")


def dump(c: ProcessCluster, nid: str) -> dict[str, Any]:
    """Everything the node serves from its local state: namespaces, entries, audit."""
    spaces = c.request(nid, "GET", "api/v1/namespaces", role="viewer")
    spaces.raise_for_status()
    configs = c.request(nid, "GET", "api/v1/configs", role="viewer")
    configs.raise_for_status()
    audit = {}
    for ns in spaces.json():
        r = c.request(nid, "GET", f"api/v1/namespaces/{ns['path']}/audit?limit=1000", role="viewer")
        r.raise_for_status()
        audit[ns["path"]] = r.json()
    return {"namespaces": spaces.json(), "configs": configs.json(), "audit": audit}


def entries(state: dict[str, Any], ns: str) -> dict[str, str]:
    """key -> value of the namespace's entries in a `dump`."""
    return {e["key"]: e["value"] for e in state["configs"] if e["namespace"] == ns}


def wait_converged(
    c: ProcessCluster, nodes: list[str] | None = None, timeout: float = 20.0
) -> dict[str, Any]:
    """Wait until the nodes have applied the same index and serve identical state; it."""
    group = nodes or list(c.ids)

    def same() -> dict[str, Any] | None:
        applied = {n: cluster_info(c, n)["appliedIndex"] for n in group}
        commits = {n: cluster_info(c, n)["commitIndex"] for n in group}
        if len(set(applied.values())) != 1 or set(commits.values()) != set(applied.values()):
            return None
        states = [dump(c, n) for n in group]
        if any(s != states[0] for s in states[1:]):
            return None
        # Nothing applied in between: the dumps are of one index.
        if {n: cluster_info(c, n)["appliedIndex"] for n in group} != applied:
            return None
        return states[0]

    return c.wait_for(same, timeout, 0.1, f"{', '.join(group)} to converge")


class Writer(threading.Thread):
    """Writes ``key-i = value-i`` one at a time to any running node; records every outcome.

    Each key is attempted once. ``acked`` holds the writes the cluster acknowledged (2xx),
    ``attempted`` every write sent (acknowledged or not, which may or may not have applied).
    """

    def __init__(self, c: ProcessCluster, ns: str, prefix: str = "k") -> None:
        super().__init__(name=f"writer-{ns}", daemon=True)
        self.c, self.ns, self.prefix = c, ns, prefix
        self.acked: dict[str, str] = {}
        self.attempted: dict[str, str] = {}
        self.ack_times: list[float] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._run_id = uuid.uuid4().hex[:6]

    def run(self) -> None:
        target = 0
        with httpx.Client(timeout=httpx.Timeout(3.0, connect=0.5)) as http:
            i = 0
            while not self._halt.is_set():
                nodes = self.c.running()
                if not nodes:
                    self._halt.wait(0.02)
                    continue
                nid = nodes[target % len(nodes)]
                key, value = f"{self.prefix}{i:05d}", f"v{i}-{self._run_id}"
                i += 1
                self.attempted[key] = value
                try:
                    r = http.put(
                        self.c.url(nid) + f"api/v1/namespaces/{self.ns}/config/{key}",
                        json={"value": value},
                        headers=self.c.auth("admin"),
                        follow_redirects=True,
                    )
                except httpx.HTTPError as exc:
                    self.errors.append(f"{nid}: {type(exc).__name__}")
                    target += 1
                    self._halt.wait(0.02)
                    continue
                if ok(r):
                    self.acked[key] = value
                    self.ack_times.append(time.monotonic())
                else:
                    self.errors.append(f"{nid}: {r.status_code} {r.text[:120]}")
                    target += 1
                    self._halt.wait(0.02)

    def acks_after(self, t: float) -> int:
        return sum(1 for x in self.ack_times if x > t)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
