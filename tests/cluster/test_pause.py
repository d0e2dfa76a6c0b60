"""docs/behaviour.md §12: a stale leader with a lower term steps down when it sees a
higher one. The leader is frozen with SIGSTOP (alive, sockets open, silent) while the others
elect a new leader, then thawed."""

from __future__ import annotations

import time
from collections.abc import Callable

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import (
    TOLERANCE_S,
    boot,
    cluster_info,
    election_hi_s,
    entries,
    put_config,
    seed,
    wait_converged,
)


def test_frozen_leader_thaws_into_a_follower_of_the_new_term(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    old = boot(c)
    seed(c, "pause", {"a": "1"})
    term0 = cluster_info(c, old)["term"]
    others = [n for n in c.ids if n != old]

    c.pause(old)
    new = c.wait_leader(others, timeout=10, min_term=term0 + 1)
    put_config(c, "pause", "b", "2", nodes=others)
    new_term = cluster_info(c, new)["term"]

    t0 = time.monotonic()
    c.resume(old)

    # From now on no two nodes may both be ready leaders, and the old one must follow.
    def thawed_follower() -> bool:
        leaders = c.leaders()
        assert len(leaders) <= 1, f"two ready leaders: {leaders}"
        info = cluster_info(c, old)
        return info["role"] == "follower" and info["term"] >= new_term

    c.wait_for(thawed_follower, 10, 0.01, f"{old} to follow after thawing")
    took = time.monotonic() - t0
    assert took <= election_hi_s(c) + TOLERANCE_S, f"stale leader stepped down after {took:.3f}s"
    c.wait_ready()
    state = wait_converged(c)
    assert entries(state, "pause") == {"a": "1", "b": "2"}
