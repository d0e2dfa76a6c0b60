"""REFERENCE 5, 6, 7: two nodes down → no leader, readable, not writable; one back → writes."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import (
    TOLERANCE_S,
    cluster_info,
    create_namespace,
    election_hi_s,
    get_config,
    put_config,
    wait_converged,
)


@pytest.mark.parametrize("down", ["both_followers", "leader_and_follower"])
def test_survivor_without_quorum_serves_reads_refuses_writes_until_one_returns(
    make_cluster: Callable[..., ProcessCluster], down: str
) -> None:
    c = make_cluster(3)
    c.start_all()
    leader = c.wait_leader(timeout=15)
    c.wait_ready()
    create_namespace(c, "quorum")
    put_config(c, "quorum", "color", "blue")
    wait_converged(c)
    followers = [n for n in c.ids if n != leader]
    survivor = leader if down == "both_followers" else followers[0]
    killed = [n for n in c.ids if n != survivor]

    t0 = time.monotonic()
    for n in killed:
        c.kill(n)

    def stepped_down() -> dict[str, object] | None:
        info = cluster_info(c, survivor)
        return info if info["role"] != "leader" and not info["leaderKnown"] else None

    info = c.wait_for(stepped_down, 10, 0.01, f"{survivor} to lose its leader")
    took = time.monotonic() - t0
    if down == "both_followers":  # REFERENCE 5/9: a leader without a majority steps down
        assert took <= election_hi_s(c) + TOLERANCE_S, f"stepped down after {took:.3f}s"
    assert info["httpStatus"] == 503 and info["status"] == "not_ready", info
    assert info["leader"] is None

    # For a few election timeouts: never a leader, reads answer 200, writes 503.
    window_end = time.monotonic() + 3 * election_hi_s(c)
    while time.monotonic() < window_end:
        info = cluster_info(c, survivor)
        assert info["role"] != "leader" and info["httpStatus"] == 503, info
        r = get_config(c, survivor, "quorum", "color")
        assert r.status_code == 200 and r.json()["value"] == "blue", r.text
        w = c.request(survivor, "PUT", "api/v1/namespaces/quorum/config/color", json={"value": "x"})
        assert w.status_code == 503, w.text
        assert w.json()["title"] == "No leader available"
        assert w.headers["content-type"].startswith("application/problem+json")
        assert w.headers.get("Retry-After") == "1"

    # One node back: a leader among the two, writes resume, nothing lost.
    back = killed[0]
    c.start(back)
    new = c.wait_leader([survivor, back], timeout=15)
    assert new in (survivor, back)
    put_config(c, "quorum", "color", "green", nodes=[survivor, back])
    state = wait_converged(c, [survivor, back])
    entry = next(e for e in state["configs"] if e["key"] == "color")
    assert (entry["value"], entry["version"]) == ("green", 2)
