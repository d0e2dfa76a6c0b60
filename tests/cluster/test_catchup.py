"""docs/behaviour.md §5: a node killed while writes continue catches up when it returns."""

from __future__ import annotations

from collections.abc import Callable

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import (
    boot,
    cluster_info,
    create_namespace,
    entries,
    put_config,
    seed,
    wait_converged,
)


def test_restarted_node_receives_the_entries_it_missed(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    leader = boot(c)
    seed(c, "production", {"db.host": "db-1"})
    lagging = next(n for n in c.ids if n != leader)
    before = cluster_info(c, lagging)["appliedIndex"]
    c.kill(lagging)

    # While it is down: a new namespace (the `staging` example) and more writes.
    up = [n for n in c.ids if n != lagging]
    create_namespace(c, "staging", nodes=up)
    for i in range(20):
        put_config(c, "staging", f"feature.{i}", f"on-{i}", nodes=up)
    put_config(c, "production", "db.host", "db-2", nodes=up)
    ahead = wait_converged(c, up)
    ahead_index = cluster_info(c, up[0])["appliedIndex"]

    c.start(lagging)
    c.wait_ready()
    state = wait_converged(c)
    assert state == ahead
    assert {ns["path"] for ns in state["namespaces"]} == {"production", "staging"}
    assert entries(state, "staging") == {f"feature.{i}": f"on-{i}" for i in range(20)}
    prod = [e for e in state["configs"] if e["namespace"] == "production"]
    assert [(e["value"], e["version"]) for e in prod] == [("db-2", 2)]
    assert cluster_info(c, lagging)["appliedIndex"] >= ahead_index > before
