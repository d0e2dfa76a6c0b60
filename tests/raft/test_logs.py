"""The core logs its decisions at debug level on ``confman.raft`` (and nothing when off)."""

from __future__ import annotations

import logging

import pytest

from confman.raft.types import Role
from tests.raft.harness import Cluster


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.raft for r in caplog.records if r.name == "confman.raft"]  # type: ignore[attr-defined]


def test_an_election_is_logged_decision_by_decision(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="confman.raft")
    c = Cluster()
    c.elect("n1")
    ev = _events(caplog)
    kinds = [(e["node"], e["event"]) for e in ev]
    assert ("n1", "become-pre-candidate") in kinds
    assert ("n2", "vote-granted") in kinds and ("n3", "vote-granted") in kinds
    assert ("n1", "pre-vote-won") in kinds
    assert ("n1", "become-candidate") in kinds
    assert ("n1", "become-leader") in kinds
    assert kinds.index(("n1", "become-pre-candidate")) < kinds.index(("n1", "become-leader"))
    grant = next(e for e in ev if e["event"] == "vote-granted" and e["kind"] == "VOTE")
    assert grant["to"] == "n1" and grant["candidate_term"] == 1 and grant["term"] == 1
    # Followers adopt the new term and say why.
    bump = next(e for e in ev if e["event"] == "become-follower" and e["node"] == "n2")
    assert bump["reason"] == "newer term" and bump["new_term"] == 1
    leader = next(e for e in ev if e["event"] == "become-leader")
    assert leader["votes"] in ("n1,n2", "n1,n3", "n1,n2,n3")
    msg = next(r.getMessage() for r in caplog.records if "become-leader" in r.getMessage())
    assert msg.startswith("n1 term 1: become-leader votes=")
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "confman.raft")


def test_check_quorum_step_down_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="confman.raft")
    c = Cluster(pre_vote=False)
    leader = c.elect("n1")
    c.isolate("n1")
    caplog.clear()
    c.tick(16, nodes=["n1"])  # the isolated leader loses its quorum
    ev = _events(caplog)
    lost = next(e for e in ev if e["event"] == "check-quorum-lost")
    assert lost["node"] == "n1" and lost["heard_from"] == "-"
    down = next(e for e in ev if e["event"] == "become-follower" and e["node"] == "n1")
    assert down["reason"] == "check-quorum" and down["was"] == "leader"
    assert leader.role != Role.LEADER


def test_stale_log_vote_refusal_names_both_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="confman.raft")
    c = Cluster(pre_vote=False)
    c.elect("n1")
    c.isolate("n3")
    c.nodes["n1"].propose(b"x")
    c.deliver()
    c.heal()
    c.expire_leases()
    caplog.clear()
    c.nodes["n3"].campaign()
    c.deliver()
    refused = [e for e in _events(caplog) if e["event"] == "vote-refused"]
    assert refused and all(e["to"] == "n3" for e in refused)
    assert "behind ours" in str(refused[0]["reason"])


def test_nothing_is_logged_with_debug_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="confman.raft")
    c = Cluster()
    c.elect("n1")
    c.tick(40)
    assert not [r for r in caplog.records if r.name == "confman.raft"]
