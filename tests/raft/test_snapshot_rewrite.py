"""docs/storage.md §7.2: the sender of a snapshot streams the live database at the index its
read transaction sees, ``B``, which may be past the ``A`` the core recorded; the follower's
core sees a snapshot at ``B`` and the leader must go on replicating from ``B + 1``."""

from __future__ import annotations

from dataclasses import replace

from confman.raft.progress import ProgressState
from confman.raft.types import Message, MessageType, Snapshot, SnapshotMeta
from tests.raft.test_replication import _leader_compacted_past_n3


def test_snapshot_rewritten_to_a_later_index_is_followed_by_replication() -> None:
    c, leader = _leader_compacted_past_n3(20, b"state@A")
    st = c.storage["n1"]
    a = st.snapshot().meta.index
    c.isolate("n3")
    for i in range(5):
        leader.propose(f"w{i}".encode())
    c.deliver()
    b = leader.applied
    assert b > a
    term_b = st.term(b)
    rewritten: list[int] = []

    def rewrite(m: Message) -> bool:
        if m.type is not MessageType.SNAPSHOT or m.snapshot is None:
            return True
        assert m.snapshot.meta.index == a  # what the core asked for
        meta = SnapshotMeta(b, term_b, m.snapshot.meta.conf_state)
        rewritten.append(b)
        c.nodes[m.to].step(replace(m, snapshot=Snapshot(meta, b"state@B")))
        return False

    c.heal()
    c.filter = rewrite
    c.tick(8)
    c.deliver()
    assert rewritten
    n3 = c.storage["n3"]
    assert (n3.snapshot().meta.index, n3.snapshot().data) == (b, b"state@B")
    assert c.nodes["n3"].commit_index == leader.commit_index
    leader.propose(b"after")
    c.deliver()
    assert c.data("n3")[-1] == b"after"
    assert leader.prs["n3"].state == ProgressState.REPLICATE
    assert leader.prs["n3"].match == leader.log.last_index()


def test_follower_already_past_the_rewritten_index_ignores_the_snapshot() -> None:
    c, leader = _leader_compacted_past_n3(20, b"state@A")
    c.deliver()
    c.tick(8)
    c.deliver()  # n3 caught up (by the snapshot at A, then the log)
    n3 = c.nodes["n3"]
    assert n3.commit_index == leader.commit_index
    before = c.storage["n3"].snapshot()
    b = leader.applied
    snap = Snapshot(SnapshotMeta(b, c.storage["n1"].term(b), before.meta.conf_state), b"late")
    n3.step(Message(MessageType.SNAPSHOT, to="n3", frm="n1", term=leader.term, snapshot=snap))
    c.deliver()
    assert c.storage["n3"].snapshot() == before  # commit >= B: nothing installed
    leader.propose(b"after")
    c.deliver()
    assert c.data("n3")[-1] == b"after"
    assert leader.prs["n3"].state == ProgressState.REPLICATE
