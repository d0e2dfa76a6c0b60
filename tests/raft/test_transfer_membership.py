"""Leadership transfer (thesis §3.10) and one-server membership changes (§4, paper §6)."""

from __future__ import annotations

import pytest

from confman.raft.confchange import ConfChangeError
from confman.raft.types import (
    ConfChange,
    ConfChangeType,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    Role,
)
from tests.raft.harness import Cluster

MT = MessageType
CC = ConfChangeType


def test_transfer_to_up_to_date_follower() -> None:
    c = Cluster()
    old = c.elect("n1")
    old.propose(b"x")
    c.deliver()
    old.transfer_leadership("n3")
    c.deliver()
    assert c.nodes["n3"].role == Role.LEADER and c.nodes["n3"].term == old.term + 0
    assert old.role == Role.FOLLOWER and old.leader == "n3"


def test_transfer_catches_target_up_first() -> None:
    c = Cluster()
    old = c.elect("n1")
    c.isolate("n3")
    for i in range(5):
        old.propose(f"x{i}".encode())
    c.deliver()
    c.heal()
    old.transfer_leadership("n3")
    with pytest.raises(ProposalDroppedError):
        old.propose(b"during transfer")
    c.deliver()
    n3 = c.nodes["n3"]
    assert n3.role == Role.LEADER
    assert c.data("n3")[:5] == [f"x{i}".encode() for i in range(5)]


def test_transfer_aborts_after_election_timeout() -> None:
    c = Cluster()
    old = c.elect("n1")
    c.filter = lambda m: m.type != MT.TIMEOUT_NOW
    old.transfer_leadership("n2")
    assert old.lead_transferee == "n2"
    c.tick(old.cfg.election_tick_min)
    assert old.lead_transferee is None and old.role == Role.LEADER
    old.propose(b"accepted again")
    # A leader that sent a TimeoutNow serves no lease reads for the rest of its term.
    c.filter = None
    old.transfer_leadership("n2")
    c.deliver()
    assert c.nodes["n2"].role == Role.LEADER


def test_transfer_requested_on_follower_is_forwarded() -> None:
    c = Cluster()
    c.elect("n1")
    c.nodes["n2"].transfer_leadership("n3")
    c.deliver()
    assert c.nodes["n3"].role == Role.LEADER


def test_transfer_to_self_or_non_voter_is_ignored() -> None:
    c = Cluster(learners=["l1"])
    old = c.elect("n1")
    old.transfer_leadership("n1")
    old.transfer_leadership("l1")
    old.transfer_leadership("nobody")
    assert old.lead_transferee is None


def test_transfer_without_leader_raises() -> None:
    c = Cluster()
    with pytest.raises(NotLeaderError):
        c.nodes["n1"].transfer_leadership("n2")


def test_transfer_bypasses_follower_leases_only_with_timeout_now() -> None:
    c = Cluster()
    old = c.elect("n1")
    c.tick(7)
    assert old.lease_read_index() is not None
    old.transfer_leadership("n2")
    c.deliver()
    assert c.nodes["n2"].role == Role.LEADER
    assert old.lease_read_index() is None


def _apply_conf(c: Cluster, leader_id: str, cc: ConfChange) -> None:
    c.nodes[leader_id].propose_conf_change(cc)
    c.deliver()


def test_add_learner_then_promote_to_voter() -> None:
    c = Cluster(log_bootstrap=True)
    leader = c.elect("n1")
    leader.propose(b"before")
    c.deliver()
    c.add_node("n4")
    _apply_conf(c, "n1", ConfChange(CC.ADD_LEARNER, "n4"))
    c.tick(8)
    assert "n4" in leader.learners and "n4" not in leader.voters
    assert c.data("n4") == [b"before"]
    assert leader.quorum() == 2  # learner does not count
    _apply_conf(c, "n1", ConfChange(CC.ADD_VOTER, "n4"))
    assert "n4" in leader.voters and leader.quorum() == 3
    assert c.nodes["n4"].voters == leader.voters


def test_learner_never_counts_for_commit() -> None:
    c = Cluster(learners=["l1"])
    leader = c.elect("n1")
    c.isolate("n2")
    c.isolate("n3")
    c.dropped -= {("n1", "l1"), ("l1", "n1")}
    leader.propose(b"x")
    c.deliver()
    assert c.storage["l1"].last_index() == leader.log.last_index()
    assert leader.commit_index < leader.log.last_index()


def test_remove_follower_shrinks_quorum() -> None:
    c = Cluster()
    leader = c.elect("n1")
    _apply_conf(c, "n1", ConfChange(CC.REMOVE, "n3"))
    assert leader.voters == ("n1", "n2")
    c.isolate("n3")
    leader.propose(b"x")
    c.deliver()
    assert c.data("n2")[-1] == b"x"


def test_removed_leader_steps_down_and_others_elect() -> None:
    c = Cluster()
    leader = c.elect("n1")
    _apply_conf(c, "n1", ConfChange(CC.REMOVE, "n1"))
    assert leader.role == Role.FOLLOWER and not leader.promotable()
    c.tick(60)
    new = c.leader()
    assert new is not None and new.id in ("n2", "n3")
    assert new.voters == ("n2", "n3")


def test_one_conf_change_at_a_time() -> None:
    c = Cluster()
    leader = c.elect("n1")
    c.isolate("n2")
    c.isolate("n3")
    leader.propose_conf_change(ConfChange(CC.ADD_LEARNER, "n4"))
    with pytest.raises(ProposalDroppedError):
        leader.propose_conf_change(ConfChange(CC.ADD_LEARNER, "n5"))


def test_invalid_conf_changes_rejected() -> None:
    c = Cluster()
    leader = c.elect("n1")
    with pytest.raises(ConfChangeError):
        leader.propose_conf_change(ConfChange(CC.ADD_VOTER, "n2"))
    with pytest.raises(ConfChangeError):
        leader.propose_conf_change(ConfChange(CC.REMOVE, "zz"))
    with pytest.raises(ConfChangeError):
        leader.propose_conf_change(ConfChange(CC.ADD_LEARNER, "n3"))
    # Applying an invalid change (e.g. duplicated on replay) leaves membership unchanged.
    before = leader.conf_state()
    assert leader.apply_conf_change(ConfChange(CC.ADD_VOTER, "n2")) == before


def test_conf_change_refused_until_new_leader_commits_in_its_term() -> None:
    c = Cluster()
    c.filter = lambda m: not (m.to == "n1" and m.type == MT.APPEND_RESP)
    leader = c.elect("n1")
    assert leader.commit_index < leader.log.last_index()  # its no-op is not committed
    with pytest.raises(ProposalDroppedError, match="not committed"):
        leader.propose_conf_change(ConfChange(CC.ADD_LEARNER, "n4"))
    c.filter = None
    c.tick(8)
    assert leader.commit_index == leader.log.last_index()
    leader.propose_conf_change(ConfChange(CC.ADD_LEARNER, "n4"))
