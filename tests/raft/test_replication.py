"""Log replication and commitment: Raft paper §5.3, §5.4.2 (Figure 8), Figure 2 (AppendEntries)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from confman.raft.node import RawNode
from confman.raft.progress import ProgressState
from confman.raft.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    NotLeaderError,
    Role,
)
from tests.raft.harness import Cluster

MT = MessageType


def _logs(c: Cluster) -> dict[str, list[tuple[int, int]]]:
    out = {}
    for nid in c.nodes:
        st = c.storage[nid]
        out[nid] = [(st.term(i), i) for i in range(st.first_index(), st.last_index() + 1)]
    return out


def test_proposals_replicate_commit_and_apply_in_order() -> None:
    c = Cluster()
    leader = c.elect("n1")
    first = leader.propose_many([b"a", b"b", b"c"])
    assert first == 2
    c.deliver()
    for nid in c.nodes:
        assert c.data(nid) == [b"a", b"b", b"c"]
        assert c.nodes[nid].commit_index == 4
    logs = _logs(c)
    assert logs["n1"] == logs["n2"] == logs["n3"]


def test_propose_on_follower_raises_with_leader_hint() -> None:
    c = Cluster()
    c.elect("n1")
    with pytest.raises(NotLeaderError) as exc:
        c.nodes["n2"].propose(b"x")
    assert exc.value.leader == "n1"


def test_leader_does_not_count_itself_before_persisting() -> None:
    """The leader's own unpersisted entry must not complete a quorum."""
    c = Cluster()
    leader = c.elect("n1")
    c.dropped |= {("n1", "n3"), ("n3", "n1")}
    idx = leader.propose(b"x")
    rd = leader.ready()  # leader has NOT persisted yet
    assert [e.index for e in rd.entries] == [idx]
    for m in rd.messages:
        if m.to == "n2":
            c.nodes["n2"].step(m)
    c.process("n2")
    for m in c.queue:
        if m.to == "n1":
            leader.step(m)
    c.queue.clear()
    # n2 acked, but leader's own copy is not durable: 1 of 3 is not a quorum.
    assert leader.commit_index < idx
    c.storage["n1"].append(rd.entries)
    leader.advance(rd)
    assert leader.commit_index == idx


def test_follower_rejects_append_that_does_not_match_and_hints() -> None:
    c = Cluster()
    n2 = c.nodes["n2"]
    n2.step(Message(MT.APPEND, "n2", "n1", term=1, index=5, log_term=1, entries=()))
    resp = next(m for m in c.take_messages() if m.type == MT.APPEND_RESP)
    assert resp.reject and resp.index == 5 and resp.reject_hint == 0


def test_conflicting_suffix_replaced_but_matching_entries_kept() -> None:
    c = Cluster()
    st = c.storage["n2"]
    st.append([Entry(1, 1), Entry(1, 2), Entry(2, 3), Entry(2, 4)])
    st.set_hard_state(HardState(2, None, 1))
    n2 = c.start("n2")
    # Leader of term 3 sends entries 2..3 where 3 has term 3: entry 3,4 (term 2) conflict.
    n2.step(
        Message(
            MT.APPEND,
            "n2",
            "n1",
            term=3,
            index=1,
            log_term=1,
            entries=(Entry(1, 2), Entry(3, 3)),
            commit=2,
        )
    )
    c.process("n2")
    assert [(st.term(i), i) for i in range(1, st.last_index() + 1)] == [(1, 1), (1, 2), (3, 3)]


def test_stale_append_does_not_truncate_newer_entries() -> None:
    """The PySyncObj bug: an old, duplicated append must not drop later matching entries."""
    c = Cluster()
    n2 = c.nodes["n2"]
    full = Message(
        MT.APPEND,
        "n2",
        "n1",
        term=1,
        index=0,
        log_term=0,
        entries=(Entry(1, 1), Entry(1, 2), Entry(1, 3)),
    )
    old = Message(MT.APPEND, "n2", "n1", term=1, index=0, log_term=0, entries=(Entry(1, 1),))
    n2.step(full)
    n2.step(old)
    c.process("n2")
    assert c.storage["n2"].last_index() == 3


def test_stale_append_truncates_with_deliberate_bug() -> None:
    c = Cluster(bugs=frozenset({"truncate_on_append"}))
    n2 = c.nodes["n2"]
    n2.step(
        Message(
            MT.APPEND,
            "n2",
            "n1",
            term=1,
            index=0,
            log_term=0,
            entries=(Entry(1, 1), Entry(1, 2), Entry(1, 3)),
        )
    )
    n2.step(Message(MT.APPEND, "n2", "n1", term=1, index=0, log_term=0, entries=(Entry(1, 1),)))
    c.process("n2")
    assert c.storage["n2"].last_index() == 1


def test_append_below_commit_is_acked_at_commit() -> None:
    c = Cluster()
    leader = c.elect("n1")
    leader.propose(b"x")
    c.deliver()
    n2 = c.nodes["n2"]
    n2.step(Message(MT.APPEND, "n2", "n1", term=leader.term, index=0, log_term=0))
    resp = next(m for m in c.take_messages() if m.type == MT.APPEND_RESP)
    assert not resp.reject and resp.index == n2.commit_index


def test_fast_backoff_by_term_needs_few_round_trips() -> None:
    """A follower with a long divergent tail is repaired in O(terms) round trips, not O(n)."""
    c = Cluster(ids=["n1", "n2", "n3"])
    # n1: 50 entries of term 1 then becomes leader at term 5; n2: 50 of term 1 + 100 of term 2.
    for nid in ("n1", "n3"):
        c.storage[nid].append([Entry(1, i) for i in range(1, 51)])
        c.storage[nid].set_hard_state(HardState(4, None, 50))
        c.start(nid)
    c.storage["n2"].append(
        [Entry(1, i) for i in range(1, 51)] + [Entry(2, i) for i in range(51, 151)]
    )
    c.storage["n2"].set_hard_state(HardState(2, None, 50))
    c.start("n2")
    leader = c.elect("n1")
    rejects = []

    def spy(m: Message) -> bool:
        if m.type == MT.APPEND_RESP and m.reject and m.frm == "n2":
            rejects.append(m)
        return True

    c.filter = spy
    leader.propose(b"x")
    c.deliver()
    assert c.storage["n2"].last_index() == 52
    assert c.storage["n2"].term(51) == leader.term
    assert len(rejects) <= 2


def test_probe_then_replicate_then_pipelining_bounded_by_inflights() -> None:
    c = Cluster(max_inflight_msgs=4)
    leader = c.elect("n1")
    assert leader.prs["n2"].state == ProgressState.REPLICATE
    c.dropped |= {("n2", "n1")}  # acks from n2 are lost
    for i in range(10):
        leader.propose(f"x{i}".encode())
        c.deliver()
    pr = leader.prs["n2"]
    assert pr.inflights.full() and len(pr.inflights) == 4
    assert leader.commit_index == 11  # n3 keeps the quorum
    c.heal()
    c.tick(8)  # heartbeat response frees the window and n2 catches up
    c.deliver()
    assert c.storage["n2"].last_index() == leader.log.last_index()


def test_lost_append_detected_and_resent() -> None:
    c = Cluster()
    leader = c.elect("n1")
    drop_next = {"n2"}

    def lose_once(m: Message) -> bool:
        if m.type == MT.APPEND and m.to in drop_next and m.entries:
            drop_next.discard(m.to)
            return False
        return True

    c.filter = lose_once
    leader.propose(b"lost")
    c.deliver()
    leader.propose(b"next")
    c.deliver()
    assert c.data("n2") == [b"lost", b"next"]


def test_follower_learns_commit_from_heartbeat() -> None:
    c = Cluster()
    leader = c.elect("n1")
    c.filter = lambda m: not (m.type == MT.APPEND and m.to == "n3" and not m.entries)
    leader.propose(b"x")
    c.deliver()
    assert c.nodes["n3"].commit_index < leader.commit_index
    c.filter = None
    c.tick(7)
    assert c.nodes["n3"].commit_index == leader.commit_index
    assert c.data("n3") == [b"x"]


def _figure8(bugs: frozenset[str] = frozenset()) -> tuple[Cluster, int]:
    """Figure 8 (c): s1 leads term 4 with entry 2 of term 2 that s5 (term 3) contests."""
    c = Cluster(ids=["s1", "s2", "s3", "s4", "s5"], max_size_per_msg=1, bugs=bugs)
    logs = {
        "s1": [Entry(1, 1), Entry(2, 2)],
        "s2": [Entry(1, 1), Entry(2, 2)],
        "s3": [Entry(1, 1)],
        "s4": [Entry(1, 1)],
        "s5": [Entry(1, 1), Entry(3, 2)],
    }
    for nid, ents in logs.items():
        c.storage[nid].append(ents)
        c.storage[nid].set_hard_state(HardState(3, None, 1))
        c.start(nid)
    c.isolate("s5")
    c.dropped |= {("s1", "s4"), ("s4", "s1")}
    # s1 replicates entry 2 (term 2) to s3 but none of its term-4 entries get accepted.

    def accepted_term4(m: Message) -> bool:
        st = c.storage[m.to]
        matches = m.index <= st.last_index() and st.term(m.index) == m.log_term
        return m.type == MT.APPEND and matches and any(e.term == 4 for e in m.entries)

    def strip_term4(m: Message) -> bool:
        if not accepted_term4(m):
            return True
        c.nodes[m.to].step(replace(m, entries=tuple(e for e in m.entries if e.term != 4)))
        return False

    c.filter = strip_term4
    leader = c.elect("s1")
    assert leader.term == 4
    c.tick(8)  # a heartbeat round lets s1 probe s3 back to index 2
    return c, 2


def test_figure8_old_term_entry_not_committed_by_counting_replicas() -> None:
    """§5.4.2: a leader never commits an entry of an older term by counting replicas."""
    c, idx = _figure8()
    leader = c.nodes["s1"]
    have = [n for n in c.nodes if c.storage[n].last_index() >= idx and c.storage[n].term(idx) == 2]
    assert sorted(have) == ["s1", "s2", "s3"]  # a majority of 5 holds it...
    assert leader.commit_index < idx  # ...but it is not committed
    assert leader.prs["s2"].match == leader.prs["s3"].match == idx  # and s1 knows it
    c.filter = None
    c.tick(8)
    assert leader.commit_index >= idx + 1  # committed indirectly with the term-4 entry


def test_figure8_old_term_committed_with_deliberate_bug() -> None:
    c, idx = _figure8(frozenset({"commit_old_terms"}))
    assert c.nodes["s1"].commit_index >= idx


def test_commit_index_is_persisted_in_hard_state() -> None:
    c = Cluster()
    leader = c.elect("n1")
    leader.propose(b"x")
    c.deliver()
    assert c.storage["n2"].hard_state.commit == leader.commit_index


def _leader_compacted_past_n3(writes: int, data: bytes) -> tuple[Cluster, RawNode]:
    """n1 leads and has compacted its log into a snapshot while n3 was cut off."""
    c = Cluster()
    leader = c.elect("n1")
    c.isolate("n3")
    for i in range(writes):
        leader.propose(f"v{i}".encode())
    c.deliver()
    st = c.storage["n1"]
    st.create_snapshot(leader.applied, ConfState(("n1", "n2", "n3")), data)
    st.compact(leader.applied)
    c.heal()
    return c, leader


def test_snapshot_sent_to_follower_behind_compaction() -> None:
    c, leader = _leader_compacted_past_n3(20, b"state@snap")
    applied = c.storage["n1"].snapshot().meta.index
    c.tick(8)
    c.deliver()
    n3st = c.storage["n3"]
    assert n3st.snapshot().meta.index == applied
    assert n3st.snapshot().data == b"state@snap"
    assert c.nodes["n3"].commit_index == leader.commit_index
    leader.propose(b"after")
    c.deliver()
    assert c.data("n3")[-1] == b"after"
    assert leader.prs["n3"].state == ProgressState.REPLICATE


def test_lost_snapshot_is_retried() -> None:
    c, leader = _leader_compacted_past_n3(5, b"s")
    st = c.storage["n1"]
    c.filter = lambda m: m.type != MT.SNAPSHOT
    c.tick(10)
    assert leader.prs["n3"].state == ProgressState.SNAPSHOT
    c.filter = None
    c.tick(20)
    assert c.storage["n3"].snapshot().meta.index == st.snapshot().meta.index


def test_report_snapshot_and_unreachable() -> None:
    c = Cluster()
    leader = c.elect("n1")
    leader.report_unreachable("n2")
    assert leader.prs["n2"].state == ProgressState.PROBE
    c.isolate("n3")
    leader.propose(b"x")
    c.deliver()
    st = c.storage["n1"]
    st.create_snapshot(leader.applied, ConfState(("n1", "n2", "n3")), b"s")
    st.compact(leader.applied)
    c.heal()
    c.filter = lambda m: m.type != MT.SNAPSHOT
    c.tick(8)
    assert leader.prs["n3"].state == ProgressState.SNAPSHOT
    leader.report_snapshot("n3", ok=False)
    assert leader.prs["n3"].state == ProgressState.PROBE
    c.filter = None
    c.tick(8)
    leader.report_snapshot("n3", ok=True)  # no-op unless in snapshot state
    assert c.storage["n3"].snapshot().meta.index == st.snapshot().meta.index


def test_restart_recovers_term_vote_commit_and_log() -> None:
    c = Cluster()
    leader = c.elect("n1")
    leader.propose(b"x")
    c.deliver()
    term, commit = c.nodes["n2"].term, c.nodes["n2"].commit_index
    c.crash("n2")
    n2 = c.start("n2")
    assert (n2.term, n2.commit_index, n2.role) == (term, commit, Role.FOLLOWER)
    assert n2.vote == c.storage["n2"].hard_state.vote
    c.deliver()
    # Committed entries are re-delivered for apply after a restart with a volatile state.
    assert c.data("n2") == [b"x"]


def test_restart_rejects_inconsistent_hard_state() -> None:
    c = Cluster()
    c.storage["n2"].set_hard_state(HardState(1, None, 5))
    with pytest.raises(ValueError, match="commit"):
        c.start("n2")


def test_single_node_cluster_commits_on_persist() -> None:
    c = Cluster(ids=["solo"])
    leader = c.elect("solo")
    leader.propose(b"x")
    c.deliver()
    assert c.data("solo") == [b"x"]
