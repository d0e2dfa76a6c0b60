"""Unit tests of the core's building blocks: storage, log, progress, config, conf changes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confman.raft.bootstrap import bootstrap_entries
from confman.raft.confchange import (
    ConfChangeError,
    apply_to,
    decode_conf_change,
    encode_conf_change,
)
from confman.raft.config import Config
from confman.raft.log import RaftLog
from confman.raft.node import RawNode
from confman.raft.progress import Progress, ProgressState, quorum_index
from confman.raft.readonly import ReadOnly
from confman.raft.storage import MemoryStorage
from confman.raft.types import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SnapshotOutOfDateError,
    UnavailableError,
)

CC = ConfChangeType


def _storage(n: int, term: int = 1) -> MemoryStorage:
    s = MemoryStorage()
    s.append([Entry(term, i, data=b"x" * 10) for i in range(1, n + 1)])
    return s


def test_memory_storage_bounds_and_compaction() -> None:
    s = _storage(10)
    assert (s.first_index(), s.last_index()) == (1, 10)
    assert len(s.entries(2, 5)) == 3
    assert len(s.entries(1, 11, max_bytes=30)) == 1  # at least one entry
    assert len(s.entries(1, 11, max_bytes=60)) == 2
    with pytest.raises(UnavailableError):
        s.entries(5, 12)
    with pytest.raises(UnavailableError):
        s.term(11)
    s.create_snapshot(5, ConfState(("a",)), b"snap")
    s.compact(5)
    assert (s.first_index(), s.last_index(), s.term(5)) == (6, 10, 1)
    with pytest.raises(CompactedError):
        s.entries(5, 7)
    with pytest.raises(CompactedError):
        s.term(4)
    with pytest.raises(CompactedError):
        s.compact(3)
    with pytest.raises(UnavailableError):
        s.compact(11)
    with pytest.raises(SnapshotOutOfDateError):
        s.create_snapshot(4, ConfState(), b"")
    with pytest.raises(UnavailableError):
        s.create_snapshot(11, ConfState(), b"")
    assert s.initial_state()[1] == ConfState(("a",))


def test_memory_storage_append_truncates_conflicts_and_skips_compacted() -> None:
    s = _storage(5)
    s.create_snapshot(2, ConfState(), b"")
    s.compact(2)
    s.append([Entry(1, 1), Entry(1, 2)])  # wholly compacted: ignored
    s.append([Entry(2, 2), Entry(2, 3), Entry(2, 4)])  # 2 is compacted; 3.. replace
    assert [s.term(i) for i in range(3, 5)] == [2, 2] and s.last_index() == 4
    with pytest.raises(UnavailableError):
        s.append([Entry(2, 9)])
    s.apply_snapshot(Snapshot(SnapshotMeta(20, 3, ConfState(("b",))), b"z"))
    assert (s.first_index(), s.last_index()) == (21, 20)
    with pytest.raises(SnapshotOutOfDateError):
        s.apply_snapshot(Snapshot(SnapshotMeta(10, 3), b""))


def test_raft_log_unstable_shadowing_and_slices() -> None:
    s = _storage(5)
    log = RaftLog(s)
    assert log.last_index() == 5 and log.committed == 0
    log.append([Entry(2, 4), Entry(2, 5), Entry(2, 6)])  # replaces 4,5 of storage
    assert [log.term(i) for i in range(1, 7)] == [1, 1, 1, 2, 2, 2]
    assert [e.index for e in log.slice(2, 7)] == [2, 3, 4, 5, 6]
    assert [e.index for e in log.slice(2, 7, max_bytes=20)] == [2]
    assert log.term(0) == 0 and log.term(99) == 0
    assert log.stable_last_index() == 3
    with pytest.raises(UnavailableError):
        log.slice(1, 9)
    log.stable_to(6, 1)  # wrong term: stays unstable
    assert log.unstable.entries
    s.append(log.unstable.entries)
    log.stable_to(6, 2)
    assert not log.unstable.entries and log.stable_last_index() == 6
    log.commit_to(6)
    with pytest.raises(AssertionError):
        log.commit_to(7)
    with pytest.raises(AssertionError):
        log.append([Entry(3, 5)])  # below committed
    assert log.find_conflict_by_term(6, 1) == 3
    assert log.find_conflict_by_term(6, 0) == 0


def test_raft_log_restore_snapshot_and_committed_iteration() -> None:
    s = _storage(3)
    log = RaftLog(s)
    log.commit_to(3)
    assert [e.index for e in log.next_committed()] == [1, 2, 3]
    snap = Snapshot(SnapshotMeta(10, 4, ConfState(("a",))), b"d")
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.term(10)) == (11, 10, 4)
    assert log.snapshot() is snap and log.stable_last_index() == 0
    assert log.next_committed() == []
    with pytest.raises(CompactedError):
        log.slice(5, 8)
    log.append([Entry(4, 11)])
    log.unstable.stable_snap_to(9)
    assert log.unstable.snapshot is snap
    log.stable_snap_to(10)
    assert log.unstable.snapshot is None


def test_maybe_append_conflict_with_committed_entry_is_fatal() -> None:
    log = RaftLog(_storage(3))
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, [Entry(2, 2)])
    assert log.maybe_append(1, 9, 3, [Entry(2, 2)]) is None


def test_progress_back_off_and_flow_control() -> None:
    pr = Progress(10, 2, False, 0)
    assert not pr.is_paused()
    assert not pr.maybe_decr_to(5, 3)  # stale: we did not probe at 5
    assert pr.maybe_decr_to(9, 3) and pr.next == 4
    pr.probe_sent = True
    assert pr.is_paused()
    assert pr.maybe_update(6) and not pr.maybe_update(5)
    pr.become_replicate()
    assert pr.next == 7
    pr.inflights.add(8)
    pr.inflights.add(9)
    assert pr.is_paused()
    pr.inflights.free_le(8)
    assert not pr.is_paused()
    assert not pr.maybe_decr_to(6, 0)  # at or below match: stale
    assert pr.maybe_decr_to(9, 0) and pr.next == 7
    pr.become_snapshot(20, 5)
    assert pr.is_paused() and pr.as_dict()["state"] == "snapshot"
    pr.become_probe()
    assert pr.next == 21 and pr.state == ProgressState.PROBE
    assert quorum_index([]) == 0
    assert quorum_index([5, 1, 9]) == 5
    assert quorum_index([5, 1, 9, 7]) == 5
    assert quorum_index([5, 1, 9, 7, 2]) == 5


def test_readonly_queue() -> None:
    ro = ReadOnly()
    assert ro.add_request(5, b"a", "n1") and not ro.add_request(5, b"a", "n1")
    ro.add_request(6, b"b", "n2")
    assert ro.last_pending() == b"b" and len(ro) == 2
    assert ro.recv_ack("n3", b"zz") is None
    assert ro.recv_ack("n3", b"b") == {"n3"}
    assert ro.advance(b"zz") == []
    done = ro.advance(b"b")
    assert [(s.context, s.index) for s in done] == [(b"a", 5), (b"b", 6)]
    assert ro.last_pending() == b""


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"id": ""}, "id"),
        ({"heartbeat_tick": 0}, "heartbeat_tick"),
        ({"election_tick_min": 5, "heartbeat_tick": 5}, "election_tick_min"),
        ({"election_tick_max": 15}, "election_tick_max"),
        ({"lease_tick": 15}, "lease_tick"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"id": "n1", **kwargs}
    with pytest.raises(ValueError, match=field):
        Config(**args).validate()  # type: ignore[arg-type]


def test_config_default_lease_shorter_than_election_timeout() -> None:
    cfg = Config(id="n1")
    cfg.validate()
    assert cfg.lease_tick is not None and 0 < cfg.lease_tick < cfg.election_tick_min
    assert cfg.heartbeat_tick * 2 <= cfg.election_tick_min


@given(
    st.sampled_from(list(ConfChangeType)),
    st.text(min_size=1, max_size=20),
    st.binary(max_size=50),
)
def test_conf_change_round_trip(kind: ConfChangeType, nid: str, ctx: bytes) -> None:
    cc = ConfChange(kind, nid, ctx)
    assert decode_conf_change(encode_conf_change(cc)) == cc


def test_conf_change_decode_errors_and_rules() -> None:
    with pytest.raises(ConfChangeError):
        decode_conf_change(b"\xff\x00garbage")
    with pytest.raises(ConfChangeError, match="version"):
        decode_conf_change(b"\x94\x09\x00\xa1a\xc4\x00")
    conf = ConfState(("a", "b"), ("c",))
    assert apply_to(conf, ConfChange(CC.ADD_VOTER, "c")) == ConfState(("a", "b", "c"))
    assert apply_to(conf, ConfChange(CC.REMOVE, "c")) == ConfState(("a", "b"))
    assert apply_to(conf, ConfChange(CC.REMOVE, "a")) == ConfState(("b",), ("c",))
    with pytest.raises(ConfChangeError, match="last voter"):
        apply_to(ConfState(("a",)), ConfChange(CC.REMOVE, "a"))
    with pytest.raises(ConfChangeError, match="already a learner"):
        apply_to(conf, ConfChange(CC.ADD_LEARNER, "c"))


def test_bootstrap_entries() -> None:
    ents, hs = bootstrap_entries(["b", "a"], ["c"])
    assert [decode_conf_change(e.data).node_id for e in ents] == ["a", "b", "c"]
    assert hs == HardState(1, None, 3)
    with pytest.raises(ValueError, match="voter"):
        bootstrap_entries([], ["c"])


def test_ready_contract_and_restart_validation() -> None:
    s = MemoryStorage(ConfState(("n1",)))
    node = RawNode(Config(id="n1", rng=random.Random(1)), s)
    assert not Ready().contains_updates()
    node.campaign()
    rd = node.ready()
    assert rd.contains_updates() and rd.must_sync
    with pytest.raises(RuntimeError):
        node.ready()
    s.append(rd.entries)
    assert rd.hard_state is not None
    s.set_hard_state(rd.hard_state)
    node.advance(rd)
    # A restart that claims to have applied beyond the commit index is refused.
    with pytest.raises(ValueError, match="applied"):
        RawNode(Config(id="n1", applied=99), s)
    s.create_snapshot(1, ConfState(("n1",)), b"")
    s.compact(1)
    s2 = MemoryStorage(ConfState(("n1",)))
    s2.apply_snapshot(Snapshot(SnapshotMeta(5, 1, ConfState(("n1",))), b""))
    s2.set_hard_state(HardState(1, None, 5))
    with pytest.raises(ValueError, match="below the snapshot"):
        RawNode(Config(id="n1", applied=3), s2)
