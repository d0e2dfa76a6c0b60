"""docs/behaviour.md §2 and §3: kill -9 of the leader; a new leader, writes resume, nothing lost."""

from __future__ import annotations

import time
from collections.abc import Callable

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import (
    TOLERANCE_S,
    Writer,
    boot,
    cluster_info,
    election_hi_s,
    entries,
    get_config,
    seed,
    wait_converged,
)


def test_leader_kill9_new_leader_higher_term_no_acknowledged_write_lost(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    old = boot(c)
    seed(c, "failover", {"probe": "readable"})
    term0 = cluster_info(c, old)["term"]
    survivors = [n for n in c.ids if n != old]

    writer = Writer(c, "failover")
    writer.start()
    try:
        c.wait_for(lambda: len(writer.acked) >= 30, 20, 0.05, "30 acknowledged writes")
        reads: list[tuple[str, int]] = []
        t_kill = time.monotonic()
        c.kill(old)

        def new_leader() -> str | None:
            for n in survivors:  # docs/behaviour.md §3: reads answer during the failover
                reads.append((n, get_config(c, n, "failover", "probe").status_code))
            ls = {n: t for n, t in c.leaders(survivors).items() if t > term0}
            return next(iter(ls), None)

        new = c.wait_for(new_leader, 10, 0.01, "a new leader with a higher term")
        t_elected = time.monotonic()

        def all_follow() -> bool:
            return all(c.node_of_url(cluster_info(c, n)["leader"]) == new for n in survivors)

        c.wait_for(all_follow, 5, 0.01, f"every survivor to report {new} as leader")
        t_known = time.monotonic()
        assert t_known - t_elected <= 2 * election_hi_s(c) + TOLERANCE_S
        assert reads and all(code == 200 for _, code in reads), reads
        assert cluster_info(c, new)["term"] > term0
        print(f"failover: new leader {new} after {t_elected - t_kill:.3f}s")

        # Writes resume.
        c.wait_for(lambda: writer.acks_after(t_elected) >= 20, 20, 0.05, "writes to resume")
        c.start(old)
        c.wait_ready()
        c.wait_for(lambda: writer.acks_after(time.monotonic() - 60) > 0, 10, 0.05, "writes")
    finally:
        writer.stop()

    state = wait_converged(c)
    got = entries(state, "failover")
    lost = {k: v for k, v in writer.acked.items() if got.get(k) != v}
    assert not lost, f"acknowledged writes lost or changed: {sorted(lost)[:20]}"
    phantom = {k for k in got if k != "probe" and writer.attempted.get(k) != got[k]}
    assert not phantom, f"entries never written: {sorted(phantom)[:20]}"
    info = cluster_info(c, old)
    assert info["role"] == "follower" and info["term"] > term0
    assert len(writer.acked) >= 50
