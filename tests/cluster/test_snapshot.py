"""docs/behaviour.md §18: a follower that lost its disk is rebuilt from the leader's snapshot
plus its log."""

from __future__ import annotations

from collections.abc import Callable

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import (
    boot,
    cluster_info,
    entries,
    put_config,
    seed,
    wait_converged,
)

SNAPSHOT_INTERVAL = 10


def test_wiped_follower_is_rebuilt_by_snapshot_and_log(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3, snapshot_interval=SNAPSHOT_INTERVAL)
    leader = boot(c)
    expected = {f"k{i:03d}": f"before-{i}" for i in range(4 * SNAPSHOT_INTERVAL)}
    seed(c, "snap", expected)
    victim = next(n for n in c.ids if n != leader)
    others = [n for n in c.ids if n != victim]

    def log_released(n: str) -> bool:
        # Each release of the log against the durable state database counts here; since
        # storage format 2 nothing is copied: no snapshot file exists at rest.
        body = c.request(n, "GET", "/metrics").text
        counts = [
            float(line.split()[-1])
            for line in body.splitlines()
            if line.startswith("confman_snapshots_total")
        ]
        return bool(counts) and counts[0] >= 1

    c.wait_for(lambda: all(log_released(n) for n in others), 10, 0.1, "log released")
    for n in c.ids:
        assert not any((c.node(n).data_dir / "snapshots").glob("*")), f"snapshot file on {n}"
    c.kill(victim)
    c.wipe(victim)
    assert not c.node(victim).data_dir.exists()
    # Restart the others so their in-memory logs begin at their WAL markers: the leader can
    # then only bring the victim up to date with a snapshot (streamed from its database).
    for n in others:
        c.restart(n)
    c.wait_leader(others, timeout=15)
    for i in range(SNAPSHOT_INTERVAL // 2):  # entries after the snapshot, sent as log
        expected[f"after{i}"] = f"after-{i}"
        put_config(c, "snap", f"after{i}", f"after-{i}", nodes=others)
    reference = wait_converged(c, others)

    c.start(victim)
    c.wait_ready()
    state = wait_converged(c)
    assert state == reference or entries(state, "snap") == expected
    assert entries(state, "snap") == expected
    assert c.grep_log(victim, "installed snapshot"), "victim caught up without a snapshot"
    assert cluster_info(c, victim)["appliedIndex"] == cluster_info(c, others[0])["appliedIndex"]
    # The received snapshot was installed and is gone: nothing copied stays at rest.
    assert not any((c.node(victim).data_dir / "snapshots").glob("*"))
    # The rebuilt node keeps working: it applies new writes and survives its own restart.
    put_config(c, "snap", "final", "x")
    c.restart(victim)
    c.wait_ready()
    assert entries(wait_converged(c), "snap") == {**expected, "final": "x"}
