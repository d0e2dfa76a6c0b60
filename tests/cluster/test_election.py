"""docs/behaviour.md §1: election on start, in any order; with two of three up a leader exists."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import cluster_info, create_namespace, put_config, wait_converged

#: "a leader within a few seconds" (the original's target: < 5 s), from the start of the
#: second process (which includes its ~1 s of Python start-up).
LEADER_DEADLINE_S = 5.0

ORDERS = [("node1", "node2", "node3"), ("node3", "node1", "node2"), ("node2", "node3", "node1")]


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_nodes_started_one_by_one_elect_a_leader_once_two_are_up(
    make_cluster: Callable[..., ProcessCluster], order: tuple[str, str, str]
) -> None:
    c = make_cluster(3)
    first, second, third = order
    c.start(first)
    c.wait_up(first)
    alone = cluster_info(c, first)
    assert alone["role"] != "leader" and alone["httpStatus"] == 503, alone
    assert alone["status"] == "not_ready"

    t0 = time.monotonic()
    c.start(second)
    leader = c.wait_leader([first, second], timeout=LEADER_DEADLINE_S + 5)
    took = time.monotonic() - t0
    assert took < LEADER_DEADLINE_S, f"leader after {took:.2f}s"
    assert leader in (first, second)
    c.wait_ready([first, second])
    # Two of three: a working cluster.
    create_namespace(c, "boot", nodes=[first, second])
    put_config(c, "boot", "two", "up", nodes=[first, second])

    c.start(third)
    c.wait_ready()
    infos = {n: cluster_info(c, n) for n in c.ids}
    assert {i["term"] for i in infos.values()} == {infos[leader]["term"]}, infos
    assert {c.node_of_url(i["leader"]) for i in infos.values()} == {leader}, infos
    assert [n for n, i in infos.items() if i["role"] == "leader"] == [leader]
    state = wait_converged(c)
    assert [e["value"] for e in state["configs"]] == ["up"]


def test_simultaneous_start_elects_exactly_one_leader(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    t0 = time.monotonic()
    c.start_all()
    leader = c.wait_leader(timeout=LEADER_DEADLINE_S + 5)
    took = time.monotonic() - t0
    assert took < LEADER_DEADLINE_S + 1.0, f"leader after {took:.2f}s"
    c.wait_ready()
    infos = {n: cluster_info(c, n) for n in c.ids}
    assert [n for n, i in infos.items() if i["role"] == "leader"] == [leader], infos
    assert all(i["leaderKnown"] and c.node_of_url(i["leader"]) == leader for i in infos.values())
