"""The nemesis: seeded schedules, and their execution against a recording fake cluster."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from confman.verify.nemesis import (
    PARTITION_VARIANTS,
    Action,
    Fault,
    Nemesis,
    Timing,
    parse_kinds,
    schedule,
)
from tests.verify.run_fakes import FakeCluster, FakeProc

pytestmark = pytest.mark.timeout(30)


def test_parse_kinds() -> None:
    assert parse_kinds("kill") == {"kill": ("leader", "node")}
    assert parse_kinds("none") == {}
    assert parse_kinds("") == {}
    assert set(parse_kinds("all")) == {"kill", "pause", "partition"}
    assert parse_kinds("partition:isolate-leader+cut,pause") == {
        "partition": ("isolate-leader", "cut"),
        "pause": ("leader", "node"),
    }
    assert parse_kinds("partition:cut,partition:split")["partition"] == ("cut", "split")
    with pytest.raises(ValueError, match="unknown nemesis"):
        parse_kinds("kill,flood")
    with pytest.raises(ValueError, match="variant"):
        parse_kinds("partition:everything")


def test_same_seed_same_schedule() -> None:
    a = schedule(7, "kill,pause,partition", 120, 5)
    assert a == schedule(7, "kill,pause,partition", 120, 5)
    assert a != schedule(8, "kill,pause,partition", 120, 5)
    assert len(a) >= 10


@pytest.mark.parametrize("seed", range(20))
def test_schedule_shape(seed: int) -> None:
    t = Timing()
    faults = schedule(seed, "all", 90, 3, t)
    assert faults, "90 s always has room for faults"
    assert faults[0].start >= t.warmup
    assert faults[-1].end <= 90 - t.tail
    for f in faults:
        assert t.fault[0] <= f.end - f.start <= t.fault[1] + 1e-6
        kinds = [a.kind for a in f.actions]
        assert len(set(kinds)) == len(kinds) <= 2
        for a in f.actions:
            assert sorted(a.order) == [0, 1, 2]
    for prev, nxt in itertools.pairwise(faults):
        assert nxt.start - prev.end >= t.gap[0] - 1e-6, "each fault is healed before the next"


def test_schedule_only_uses_enabled_kinds_and_variants() -> None:
    faults = [f for s in range(10) for f in schedule(s, "partition:isolate-leader", 60, 3)]
    assert faults
    assert {(a.kind, a.variant) for f in faults for a in f.actions} == {
        ("partition", "isolate-leader")
    }
    assert schedule(1, "none", 60, 3) == []
    assert schedule(1, "kill", 60, 1) == [], "one node: nothing to fault"
    mixed = [f for s in range(10) for f in schedule(s, "kill,pause,partition", 120, 3)]
    assert {a.variant for f in mixed for a in f.actions if a.kind == "partition"} == set(
        PARTITION_VARIANTS
    )
    assert any(len(f.actions) == 2 for f in mixed), "some faults combine two kinds"


def _run(cluster: FakeCluster, *actions: Action) -> Nemesis:
    """Run one fault made of ``actions`` at once (start and end already due)."""
    nemesis = Nemesis(cluster, [Fault(0.0, 0.0, actions)])  # type: ignore[arg-type]
    nemesis.run(time.monotonic(), threading.Event())
    return nemesis


def test_kill_the_leader_then_restart_it() -> None:
    c = FakeCluster(3, current_leader="node3")
    n = _run(c, Action("kill", "leader", (0, 1, 2)))
    assert c.calls == [("kill", "node3"), ("start", "node3")]
    (ev,) = n.events
    assert ev.description == "kill -9 leader node3" and ev.nodes == ["node3"]
    assert ev.end is not None and ev.end >= ev.start


def test_without_a_leader_the_seeded_node_is_used() -> None:
    c = FakeCluster(3, current_leader=None)
    _run(c, Action("pause", "leader", (1, 0, 2)))
    assert c.calls == [("pause", "node2"), ("resume", "node2")]


@pytest.mark.parametrize(
    ("action", "calls", "text"),
    [
        (
            Action("partition", "isolate-leader", (0, 1, 2)),
            [("isolate", "node2")],
            "isolate leader node2",
        ),
        (Action("partition", "isolate", (2, 0, 1)), [("isolate", "node3")], "isolate node3"),
        (
            Action("partition", "split", (2, 0, 1), size=1),
            [("partition", ("node3",))],
            "split node3 | node1,node2",
        ),
        (
            Action("partition", "bridge", (1, 2, 0)),
            [("bridge", ("node3",), "node2", ("node1",))],
            "bridge node3 | node2 | node1",
        ),
        (
            Action("partition", "cut", (0, 1, 2), size=1),
            [("cut", "node1", "node2"), ("cut", "node1", "node3")],
            "one-way cut node1 -/-> others",
        ),
        (
            Action("partition", "cut", (0, 1, 2), size=0),
            [("cut", "node2", "node1"), ("cut", "node3", "node1")],
            "one-way cut others -/-> node1",
        ),
    ],
)
def test_partitions_are_healed(action: Action, calls: list[Any], text: str) -> None:
    c = FakeCluster(3, current_leader="node2")
    n = _run(c, action)
    assert c.calls == [*calls, ("heal",)]
    assert n.events[0].description == text


def test_a_combination_hits_two_different_nodes_and_undoes_both() -> None:
    c = FakeCluster(3, current_leader="node1")
    n = _run(c, Action("kill", "leader", (0, 1, 2)), Action("pause", "leader", (0, 1, 2)))
    assert c.calls == [
        ("kill", "node1"),
        ("pause", "node2"),
        ("resume", "node2"),
        ("start", "node1"),
    ]
    assert n.events[0].name == "kill:leader+pause:leader"


def test_a_failed_action_is_noted_not_raised() -> None:
    c = FakeCluster(3, current_leader="node1")
    c.kill("node1")
    c.calls.clear()
    n = _run(c, Action("pause", "node", (0, 1, 2)))
    assert n.events[0].error == "node1 is not running"
    assert "skipped" in n.events[0].description


def test_crashes_are_noted_and_restarted_and_heal_all_restores_everything() -> None:
    c = FakeCluster(3)
    c.nodes["node2"].proc = FakeProc(1)  # exited by itself
    c.pause("node3")
    c.kill("node1")
    c.calls.clear()
    n = Nemesis(c, [])  # type: ignore[arg-type]
    done = n.heal_all()
    assert [e.nodes for e in n.crashes] == [["node2"]]
    assert "exited by itself with code 1" in n.crashes[0].description
    assert ("start", "node2") in c.calls and ("heal",) in c.calls
    assert sorted(done) == ["resumed node3", "started node1"]
    assert all(node.running and not node.paused for node in c.nodes.values())


def test_stop_ends_the_fault_in_progress() -> None:
    c = FakeCluster(3)
    stop = threading.Event()
    nemesis = Nemesis(c, [Fault(0.0, 3600.0, (Action("kill", "node", (0, 1, 2)),))])  # type: ignore[arg-type]
    t = threading.Thread(target=nemesis.run, args=(time.monotonic(), stop))
    t.start()
    deadline = time.monotonic() + 10
    while not c.calls and time.monotonic() < deadline:
        stop.wait(0.01)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert c.calls == [("kill", "node1"), ("start", "node1")]
