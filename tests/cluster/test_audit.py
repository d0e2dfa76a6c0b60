"""docs/behaviour.md §17 (issue 5): after random writes across a leader failover, every node
returns the same audit list, with exactly one event per change and the right
created/updated/deleted actions."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot, create_namespace, wait_converged

NS = "audited"
KEYS = ("alpha", "beta", "gamma")


def _apply_once(c: ProcessCluster, method: str, key: str, body: dict[str, Any] | None) -> int:
    """Send one change until the cluster answers it; the idempotency key makes every retry
    (after timeouts, 503s or a dead node) return the first outcome instead of applying twice."""
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    attempt = 0

    def once() -> int | None:
        nonlocal attempt
        nodes = c.running()
        nid = nodes[attempt % len(nodes)]
        attempt += 1
        try:
            r = c.request(
                nid,
                method,
                f"api/v1/namespaces/{NS}/config/{key}",
                json=body,
                headers=idem,
                follow=True,
                timeout=3.0,
            )
        except httpx.HTTPError:
            return None
        return r.status_code if r.status_code in (200, 201, 204, 404) else None

    return c.wait_for(once, 30, 0.05, f"{method} {key} to be answered")


def test_audit_identical_on_every_node_one_event_per_change_across_failover(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    rng = random.Random(7)
    c = make_cluster(3)
    leader = boot(c)
    create_namespace(c, NS)
    expected: list[tuple[str, str, str | None, str | None]] = []  # action, key, old, new
    current: dict[str, str] = {}
    for step in range(60):
        if step == 30:
            c.kill(leader)  # the second half runs across a failover
        key = rng.choice(KEYS)
        if key in current and rng.random() < 0.3:
            status = _apply_once(c, "DELETE", key, None)
            assert status == 204, status
            expected.append(("config.deleted", key, current.pop(key), None))
        else:
            value = f"{key}-{step}"
            status = _apply_once(c, "PUT", key, {"value": value})
            action = "config.updated" if key in current else "config.created"
            assert status == (200 if key in current else 201), (step, key, status)
            expected.append((action, key, current.get(key), value))
            current[key] = value
    c.start(leader)
    state = wait_converged(c, timeout=30)  # identical namespaces, entries and audit lists
    events = list(reversed(state["audit"][NS]))  # oldest first
    assert events[0]["action"] == "namespace.created"
    got = [(e["action"], e["key"], e["oldValue"], e["newValue"]) for e in events[1:]]
    assert got == expected
    assert {e["key"]: e["value"] for e in state["configs"] if e["namespace"] == NS} == current
