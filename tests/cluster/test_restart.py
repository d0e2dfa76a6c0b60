"""docs/behaviour.md §10: full cluster restart in every start order; all committed data present."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot, entries, put_config, seed, wait_converged


def test_full_restart_in_every_order_keeps_all_data(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    boot(c)
    expected = {f"base.{i}": f"b{i}" for i in range(10)}
    before = seed(c, "restart", expected)

    # One cluster, six rounds: each stops every node (SIGKILL and SIGTERM alternately), then
    # starts them in the next order, each answering HTTP before the next one starts.
    for round_no, order in enumerate(itertools.permutations(c.ids)):
        if round_no % 2:
            c.stop_all()
        else:
            c.kill_all()
        c.start_all(order, one_by_one=True)
        c.wait_leader(timeout=15)
        state = wait_converged(c)
        # Everything from before, unchanged: no version, audit event or timestamp drifted.
        assert state == before, f"round {round_no} ({'-'.join(order)}): state changed"
        assert entries(state, "restart") == expected, f"round {round_no}"
        key = f"round.{round_no}"
        put_config(c, "restart", key, "-".join(order))
        expected[key] = "-".join(order)
        before = wait_converged(c)
        audit = before["audit"]["restart"]
        actions = sorted(e["action"] for e in audit)
        assert actions == ["config.created"] * len(expected) + ["namespace.created"], (
            "audit events replayed, lost or changed"
        )
    assert {e["version"] for e in before["configs"]} == {1}
