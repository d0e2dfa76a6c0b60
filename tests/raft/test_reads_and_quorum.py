"""ReadIndex (thesis §6.4), leader lease (§6.4.1) and check-quorum (§9.6)."""

from __future__ import annotations

import pytest

from confman.raft.types import Message, MessageType, NotLeaderError, ReadState, Role
from tests.raft.harness import Cluster

MT = MessageType


def test_read_index_on_leader_needs_a_heartbeat_round() -> None:
    c = Cluster()
    leader = c.elect("n1")
    leader.propose(b"x")
    c.deliver()
    c.isolate("n1")
    leader.read_index(b"r1")
    c.deliver()
    assert c.read_states["n1"] == []  # no majority confirmed leadership
    c.heal()
    c.tick(7)  # the next heartbeat carries the pending request
    assert c.read_states["n1"] == [ReadState(leader.commit_index, b"r1")]


def test_read_index_forwarded_from_follower() -> None:
    c = Cluster()
    leader = c.elect("n1")
    leader.propose(b"x")
    c.deliver()
    c.nodes["n3"].read_index(b"f1")
    c.deliver()
    assert c.read_states["n3"] == [ReadState(leader.commit_index, b"f1")]


def test_read_index_without_known_leader_raises() -> None:
    c = Cluster()
    with pytest.raises(NotLeaderError):
        c.nodes["n1"].read_index(b"x")


def test_read_index_waits_for_first_commit_of_term() -> None:
    c = Cluster()
    old = c.elect("n1")
    old.propose(b"x")
    c.deliver()
    committed_before = old.commit_index
    # n2 wins a new term but cannot commit its no-op yet (acks to it are lost).
    c.filter = lambda m: not (m.to == "n2" and m.type == MT.APPEND_RESP)
    new = c.elect("n2")
    assert new.commit_index == committed_before
    new.read_index(b"r")
    c.deliver()
    assert c.read_states["n2"] == []
    c.filter = None
    c.tick(8)
    [rs] = c.read_states["n2"]
    assert rs.context == b"r"
    assert committed_before < rs.index <= new.commit_index
    assert new.log.term(rs.index) == new.term


def test_read_index_single_voter_immediate() -> None:
    c = Cluster(ids=["solo"])
    leader = c.elect("solo")
    leader.read_index(b"r")
    c.deliver()
    assert c.read_states["solo"] == [ReadState(leader.commit_index, b"r")]


def test_deposed_leader_cannot_serve_read_index() -> None:
    c = Cluster()
    old = c.elect("n1")
    c.isolate("n1")
    c.tick(40, nodes=["n2", "n3"])
    new = c.leader()
    assert new is not None and new.id != "n1"
    new.propose(b"newer")
    c.deliver()
    old.read_index(b"stale?")  # old still thinks it leads until its check-quorum fires
    c.deliver()
    assert c.read_states["n1"] == []


def test_read_index_without_heartbeat_with_deliberate_bug() -> None:
    c = Cluster(bugs=frozenset({"read_index_no_heartbeat"}))
    leader = c.elect("n1")
    c.isolate("n1")
    leader.read_index(b"r")
    c.deliver()
    assert c.read_states["n1"] == [ReadState(leader.commit_index, b"r")]


def test_lease_valid_after_heartbeat_acks_and_expires_without_them() -> None:
    c = Cluster()
    leader = c.elect("n1")
    assert leader.lease_read_index() is None  # no heartbeat round yet
    c.tick(7)
    assert leader.lease_read_index() == leader.commit_index
    c.isolate("n1")
    lease = leader.cfg.lease_tick
    assert lease is not None and lease < leader.cfg.election_tick_min
    c.tick(lease + 7, nodes=["n1"])
    assert leader.lease_read_index() is None


def test_lease_disabled_during_transfer() -> None:
    c = Cluster()
    leader = c.elect("n1")
    c.tick(7)
    assert leader.lease_read_index() is not None
    c.dropped |= {("n1", "n2")}
    leader.transfer_leadership("n2")
    assert leader.lease_read_index() is None
    assert c.nodes["n2"].lease_read_index() is None


def test_check_quorum_leader_steps_down_within_election_timeout() -> None:
    c = Cluster()
    leader = c.elect("n1")
    c.isolate("n1")
    ticks = 0
    while leader.role == Role.LEADER:
        c.tick(1, nodes=["n1"])
        ticks += 1
    assert ticks <= leader.cfg.election_tick_min
    assert leader.leader is None and leader.ticks_since_contact() > 0


def test_without_check_quorum_isolated_leader_stays() -> None:
    c = Cluster(check_quorum=False, pre_vote=False)
    leader = c.elect("n1")
    c.isolate("n1")
    c.tick(100, nodes=["n1"])
    assert leader.role == Role.LEADER


def test_leader_with_one_of_two_followers_keeps_leading() -> None:
    c = Cluster()
    leader = c.elect("n1")
    c.isolate("n3")
    c.tick(100)
    assert leader.role == Role.LEADER and c.nodes["n2"].leader == "n1"
    assert leader.ticks_since_contact() == 0
    st = leader.status()
    assert st["role"] == "leader"
    assert st["progress"]["n3"]["last_contact_ticks"] >= 90  # type: ignore[index]


def test_heartbeats_taken_ahead_of_ready_keep_a_leader_whose_disk_is_slow() -> None:
    """A leader whose Ready is stuck in a slow fsync still heartbeats, and followers answer
    outside their own Ready, so check-quorum keeps it leading."""
    c = Cluster()
    leader = c.elect("n1")
    for _ in range(4 * leader.cfg.election_tick_max):
        for n in c.nodes.values():
            n.tick()
        for m in leader.take_heartbeats():
            assert m.type == MessageType.HEARTBEAT
            c.nodes[m.to].step(m)
            for r in c.nodes[m.to].take_heartbeats():
                assert r.type == MessageType.HEARTBEAT_RESP
                leader.step(r)
    # No Ready was ever handled (the "fsync" never returned), yet nobody lost the leader.
    assert leader.role == Role.LEADER
    assert all(c.nodes[i].leader == "n1" for i in ("n2", "n3"))
    assert not any(m.type == MessageType.HEARTBEAT for m in leader.ready().messages)


def test_heartbeats_are_not_taken_before_a_new_term_is_durable() -> None:
    c = Cluster()
    c.elect("n1")
    n2 = c.nodes["n2"]
    old = n2.term
    n2.step(Message(MessageType.HEARTBEAT, "n2", "n1", old + 1))  # a newer leader's heartbeat
    assert n2.term == old + 1
    assert n2.take_heartbeats() == []  # the response would carry a term not yet on disk
    rd = n2.ready()
    assert rd.hard_state is not None and rd.hard_state.term == old + 1
    assert any(m.type == MessageType.HEARTBEAT_RESP for m in rd.messages)
    n2.advance(rd)
    n2.step(Message(MessageType.HEARTBEAT, "n2", "n1", old + 1))
    assert [m.type for m in n2.take_heartbeats()] == [MessageType.HEARTBEAT_RESP]
