"""docs/behaviour.md §6-§9 (and the 503 of §4): two nodes down → no leader, readable, not
writable; one back → writes; five nodes tolerate two failures, not three."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import (
    TOLERANCE_S,
    boot,
    cluster_info,
    create_namespace,
    election_hi_s,
    get_config,
    put_config,
    seed,
    wait_converged,
)


@pytest.mark.parametrize("down", ["both_followers", "leader_and_follower"])
def test_survivor_without_quorum_serves_reads_refuses_writes_until_one_returns(
    make_cluster: Callable[..., ProcessCluster], down: str
) -> None:
    c = make_cluster(3)
    leader = boot(c)
    seed(c, "quorum", {"color": "blue"})
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
    if down == "both_followers":  # docs/behaviour.md §6: a leader without a majority steps down
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


def test_five_nodes_with_slow_links_tolerate_two_failures_not_three(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(5, election_timeout_ms=(300, 600))
    c.latency(15)  # every directed link: 15 ms each way
    c.start_all()
    c.wait_leader(timeout=20)
    c.wait_ready()
    create_namespace(c, "five")
    leader = c.leader()
    assert leader is not None
    down = [leader, next(n for n in c.ids if n != leader)]
    for n in down:
        c.kill(n)
    rest = [n for n in c.ids if n not in down]
    new = c.wait_leader(rest, timeout=15)
    put_config(c, "five", "k", "with three of five", nodes=rest)
    wait_converged(c, rest)  # else a survivor may hold the entry without knowing it committed
    slow = [c.links[(new, b)] for b in rest if b != new]
    assert all(p.stats.bytes_forwarded > 0 and p.latency_ms == 15 for p in slow)

    c.kill(rest[0])
    last = rest[1:]

    def no_leader() -> bool:
        return all(not cluster_info(c, n)["leaderKnown"] for n in last)

    c.wait_for(no_leader, 10, 0.02, "the two survivors to lose their leader")
    w = c.request(last[0], "PUT", "api/v1/namespaces/five/config/k", json={"value": "x"})
    assert w.status_code == 503 and w.json()["title"] == "No leader available"
    for n in last:
        r = get_config(c, n, "five", "k")
        assert r.status_code == 200 and r.json()["value"] == "with three of five"
