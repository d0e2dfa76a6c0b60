"""Leader election: Raft paper §5.2, Figure 2 (RequestVote), §5.4.1, thesis §9.6 (pre-vote)."""

from __future__ import annotations

import pytest

from confman.raft.types import Entry, Message, MessageType, Role
from tests.raft.harness import Cluster

MT = MessageType


def test_all_start_as_followers_and_one_is_elected_after_timeout() -> None:
    c = Cluster()
    assert all(n.role == Role.FOLLOWER for n in c.nodes.values())
    # No election before the minimum timeout.
    c.tick(14)
    assert c.leader() is None
    c.tick(40)
    leader = c.leader()
    assert leader is not None and leader.term >= 1
    assert [n.role for n in c.nodes.values()].count(Role.LEADER) == 1
    for n in c.nodes.values():
        assert n.leader == leader.id


def test_randomized_timeout_is_within_bounds_and_varies() -> None:
    c = Cluster(ids=[f"n{i}" for i in range(9)])
    timeouts = {n.randomized_timeout for n in c.nodes.values()}
    assert all(15 <= t < 30 for t in timeouts)
    assert len(timeouts) > 1


def test_candidate_increments_term_and_votes_for_itself() -> None:
    c = Cluster(pre_vote=False)
    n1 = c.nodes["n1"]
    n1.campaign()
    assert n1.role == Role.CANDIDATE and n1.term == 1 and n1.vote == "n1"
    votes = [m for m in c.take_messages() if m.type == MT.VOTE]
    assert {m.to for m in votes} == {"n2", "n3"}
    assert all(m.term == 1 and m.index == 0 and m.log_term == 0 for m in votes)


def test_vote_persisted_before_reply_leaves() -> None:
    c = Cluster(pre_vote=False)
    c.expire_leases()
    c.nodes["n1"].campaign()
    for m in c.take_messages():
        c.nodes[m.to].step(m)
    rd = c.nodes["n2"].ready()
    assert rd.hard_state is not None and rd.hard_state.vote == "n1" and rd.must_sync
    assert any(m.type == MT.VOTE_RESP and not m.reject for m in rd.messages)


def test_at_most_one_vote_per_term() -> None:
    c = Cluster(pre_vote=False)
    c.expire_leases()
    n3 = c.nodes["n3"]
    n3.step(Message(MT.VOTE, "n3", "n1", term=1, index=0, log_term=0))
    n3.step(Message(MT.VOTE, "n3", "n2", term=1, index=0, log_term=0))
    resps = [m for m in c.take_messages() if m.frm == "n3"]
    assert [(m.to, m.reject) for m in resps] == [("n1", False), ("n2", True)]
    # A repeated request from the same candidate is granted again (idempotent).
    n3.step(Message(MT.VOTE, "n3", "n1", term=1, index=0, log_term=0))
    assert not next(m for m in c.take_messages() if m.frm == "n3").reject


def test_vote_refused_to_less_up_to_date_log() -> None:
    """§5.4.1: compare last term first, then length."""
    c = Cluster(pre_vote=False)
    st = c.storage["n3"]
    st.append([Entry(1, 1), Entry(2, 2)])
    c.start("n3")
    n3 = c.nodes["n3"]
    c.expire_leases("n3")
    cases = [  # (candidate last term, last index, granted)
        (1, 5, False),  # longer but older term
        (2, 1, False),  # same term, shorter
        (2, 2, True),  # same
        (3, 1, True),  # newer term
    ]
    for i, (lt, li, ok) in enumerate(cases):
        n3.step(Message(MT.VOTE, "n3", f"c{i}", term=10 + i, index=li, log_term=lt))
        resp = [m for m in c.take_messages() if m.type == MT.VOTE_RESP][-1]
        assert resp.reject is (not ok), (lt, li)


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    c = Cluster(pre_vote=False)
    n1 = c.nodes["n1"]
    n1.campaign()
    c.take_messages()
    n1.step(Message(MT.APPEND, "n1", "n2", term=1, index=0, log_term=0))
    assert n1.role == Role.FOLLOWER and n1.leader == "n2"


def test_candidate_loses_with_majority_of_rejections() -> None:
    c = Cluster(pre_vote=False)
    n1 = c.nodes["n1"]
    n1.campaign()
    c.take_messages()
    n1.step(Message(MT.VOTE_RESP, "n1", "n2", term=1, reject=True))
    assert n1.role == Role.CANDIDATE
    n1.step(Message(MT.VOTE_RESP, "n1", "n3", term=1, reject=True))
    assert n1.role == Role.FOLLOWER


def test_split_vote_resolves_with_new_term() -> None:
    c = Cluster(ids=["n1", "n2", "n3", "n4"], pre_vote=False, check_quorum=False)
    c.dropped |= {("n1", "n2"), ("n2", "n1")}
    c.nodes["n1"].campaign()
    c.nodes["n2"].campaign()
    msgs = c.take_messages()
    # n3 votes n1, n4 votes n2: nobody reaches 3 of 4.
    for m in msgs:
        if (m.frm, m.to) in (("n1", "n3"), ("n2", "n4")):
            c.nodes[m.to].step(m)
    c.deliver()
    assert c.leader() is None
    c.heal()
    c.tick(80)
    leader = c.leader()
    assert leader is not None and leader.term >= 2


def test_leader_appends_noop_on_election() -> None:
    c = Cluster()
    leader = c.elect("n1")
    assert [e.data for e in c.applied["n1"]] == [b""]
    assert c.applied["n1"][0].term == leader.term
    for nid in ("n2", "n3"):
        assert [(e.term, e.index) for e in c.applied[nid]] == [(leader.term, 1)]


def test_stale_leader_steps_down_on_higher_term() -> None:
    c = Cluster()
    old = c.elect("n1")
    c.isolate("n1")
    c.tick(60, nodes=["n2", "n3"])
    new = c.leader()
    assert new is not None and new.id != "n1" and new.term > old.term
    c.heal()
    c.nodes["n1"].step(Message(MT.HEARTBEAT, "n1", new.id, term=new.term))
    assert old.role == Role.FOLLOWER and old.term == new.term and old.leader == new.id


def test_lower_term_heartbeat_gets_reply_with_newer_term() -> None:
    c = Cluster()
    c.elect("n1")
    n2 = c.nodes["n2"]
    n2.step(Message(MT.HEARTBEAT, "n2", "n3", term=0))
    replies = [m for m in c.take_messages() if m.frm == "n2"]
    assert replies and replies[0].type == MT.APPEND_RESP and replies[0].term == n2.term


def test_prevote_does_not_bump_terms_of_partitioned_node() -> None:
    """Thesis §9.6: a node cut off from the cluster keeps failing pre-votes, term unchanged."""
    c = Cluster()
    leader = c.elect("n1")
    term = leader.term
    c.isolate("n3")
    c.tick(200)
    assert c.nodes["n3"].term == term
    assert c.nodes["n3"].role == Role.PRE_CANDIDATE
    c.heal()
    c.tick(20)
    assert c.leader() is leader and leader.term == term


def test_without_prevote_partitioned_node_disrupts_on_rejoin() -> None:
    """The contrast that makes the pre-vote test meaningful."""
    c = Cluster(pre_vote=False, check_quorum=False)
    leader = c.elect("n1")
    c.isolate("n3")
    c.tick(200)
    assert c.nodes["n3"].term > leader.term
    disruptive_term = c.nodes["n3"].term
    c.heal()
    c.tick(40)
    # Its higher term deposed the healthy leader: every node moved past that term.
    new = c.leader()
    assert new is not None and new.term >= disruptive_term > 1
    assert all(n.term >= disruptive_term for n in c.nodes.values())


def test_prevote_granted_then_real_election() -> None:
    c = Cluster()
    n1 = c.nodes["n1"]
    c.expire_leases()
    n1.campaign()
    assert n1.role == Role.PRE_CANDIDATE and n1.term == 0
    pre = c.take_messages()
    assert {m.type for m in pre} == {MT.PRE_VOTE} and all(m.term == 1 for m in pre)
    for m in pre:
        c.nodes[m.to].step(m)
    # Granting a pre-vote changes neither term nor vote of the voter.
    assert c.nodes["n2"].term == 0 and c.nodes["n2"].vote is None
    c.deliver()
    assert n1.role == Role.LEADER and n1.term == 1


def test_follower_ignores_votes_while_leader_is_alive() -> None:
    """Check-quorum lease: a live leader's followers ignore (pre-)votes of higher terms."""
    c = Cluster()
    leader = c.elect("n1")
    n2 = c.nodes["n2"]
    n2.step(Message(MT.VOTE, "n2", "n3", term=leader.term + 5, index=100, log_term=100))
    assert n2.term == leader.term and n2.vote != "n3"
    assert not [m for m in c.take_messages() if m.frm == "n2" and m.type == MT.VOTE_RESP]
    # Once the leader has been silent for an election timeout, the vote is considered.
    c.expire_leases("n2")
    n2.step(Message(MT.VOTE, "n2", "n3", term=leader.term + 5, index=100, log_term=100))
    assert n2.term == leader.term + 5 and n2.vote == "n3"


def test_rejected_prevote_with_higher_term_makes_precandidate_follow() -> None:
    c = Cluster()
    n1 = c.nodes["n1"]
    n1.campaign()
    c.take_messages()
    n1.step(Message(MT.PRE_VOTE_RESP, "n1", "n2", term=7, reject=True))
    assert n1.role == Role.FOLLOWER and n1.term == 7


def test_prevote_from_lower_term_is_rejected_with_our_term() -> None:
    c = Cluster()
    n2 = c.nodes["n2"]
    n2.step(Message(MT.HEARTBEAT, "n2", "n1", term=5))
    c.take_messages()
    n2.step(Message(MT.PRE_VOTE, "n2", "n3", term=3, index=0, log_term=0))
    resp = [m for m in c.take_messages() if m.type == MT.PRE_VOTE_RESP]
    assert resp and resp[0].reject and resp[0].term == 5


@pytest.mark.parametrize("n", [1, 3, 5])
def test_single_and_odd_clusters_elect(n: int) -> None:
    c = Cluster(ids=[f"n{i}" for i in range(1, n + 1)])
    c.tick(80)
    assert c.leader() is not None


def test_removed_or_learner_node_never_campaigns() -> None:
    c = Cluster(learners=["l1"])
    c.tick(200, nodes=["l1"])
    assert c.nodes["l1"].role == Role.FOLLOWER and c.nodes["l1"].term == 0
