"""The Ready plan (``confman.raft.ready``): what is durable before which message leaves."""

from __future__ import annotations

from confman.raft.confchange import encode_conf_change
from confman.raft.ready import (
    Advance,
    HandOutEntries,
    HandOutSnapshot,
    KeepHardState,
    SaveSnapshot,
    Send,
    ServeReads,
    Step,
    WriteLog,
    plan_ready,
)
from confman.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType
APPEND = Message(MT.APPEND, "n2", "n1", term=2, entries=(Entry(2, 5),))
VOTE_OK = Message(MT.VOTE_RESP, "n1", "n2", term=3)


def _kinds(steps: tuple[Step, ...]) -> list[str]:
    out = []
    for s in steps:
        name = type(s).__name__
        if isinstance(s, Send):
            name += "(early)" if not s.durable else "(late)"
        out.append(name)
    return out


def test_a_granted_vote_leaves_only_after_the_synced_hard_state() -> None:
    rd = Ready(hard_state=HardState(3, "n1", 4), messages=[VOTE_OK], must_sync=True)
    steps = plan_ready(rd, leader=False, durable=(2, None), latest=HardState(2, None, 4))
    assert _kinds(steps) == ["KeepHardState", "WriteLog", "Send(late)", "Advance"]
    write = steps[1]
    assert isinstance(write, WriteLog) and write.sync and write.hard_state.vote == "n1"


def test_a_leader_sends_appends_before_its_write_and_the_rest_after() -> None:
    ents = [Entry(2, 5)]
    read_resp = Message(MT.READ_INDEX_RESP, "n3", "n1", term=2, index=4)
    rd = Ready(entries=ents, messages=[APPEND, read_resp], must_sync=True)
    steps = plan_ready(rd, leader=True, durable=(2, "n1"), latest=HardState(2, "n1", 4))
    assert _kinds(steps) == ["Send(early)", "WriteLog", "Send(late)", "Advance"]
    early, write, late = steps[0], steps[1], steps[2]
    assert isinstance(early, Send) and early.messages == [APPEND]
    assert isinstance(late, Send) and late.messages == [read_resp]
    # The newest hard state rides along with the entries, although the Ready had none.
    assert isinstance(write, WriteLog) and write.entries == ents
    assert write.hard_state == HardState(2, "n1", 4)


def test_a_leader_whose_term_is_not_durable_sends_nothing_early() -> None:
    """A single voter becomes leader in one Ready: its appends must carry a durable term."""
    rd = Ready(hard_state=HardState(3, "n1", 4), entries=[Entry(3, 5)], messages=[APPEND])
    steps = plan_ready(rd, leader=True, durable=(2, None), latest=HardState(2, None, 4))
    assert _kinds(steps) == ["KeepHardState", "WriteLog", "Send(late)", "Advance"]


def test_a_commit_only_hard_state_is_kept_in_memory_not_written() -> None:
    committed = [Entry(2, 5)]
    rd = Ready(
        hard_state=HardState(2, "n1", 5),
        committed_entries=committed,
        read_states=[ReadState(5, b"r")],
    )
    steps = plan_ready(rd, leader=False, durable=(2, "n1"), latest=HardState(2, "n1", 4))
    assert _kinds(steps) == ["KeepHardState", "HandOutEntries", "ServeReads", "Advance"]
    assert isinstance(steps[1], HandOutEntries) and steps[1].entries == committed
    assert isinstance(steps[2], ServeReads)


def test_handing_out_a_membership_change_writes_the_commit_first() -> None:
    cc = Entry(
        2, 5, EntryType.CONF_CHANGE, encode_conf_change(ConfChange(ConfChangeType.REMOVE, "n3"))
    )
    for hs in (HardState(2, "n1", 5), None):  # also when the commit moved in an earlier Ready
        rd = Ready(hard_state=hs, committed_entries=[cc])
        steps = plan_ready(rd, leader=False, durable=(2, "n1"), latest=HardState(2, "n1", 5))
        kinds = _kinds(steps)
        assert kinds.index("WriteLog") < kinds.index("HandOutEntries")
        write = next(s for s in steps if isinstance(s, WriteLog))
        assert write.hard_state.commit == 5 and write.sync and write.entries == []


def test_a_snapshot_is_saved_then_handed_out_before_entries_and_messages() -> None:
    snap = Snapshot(SnapshotMeta(9, 2))
    resp = Message(MT.APPEND_RESP, "n1", "n2", term=2, index=9)
    rd = Ready(hard_state=HardState(2, "n1", 9), snapshot=snap, messages=[resp], must_sync=True)
    steps = plan_ready(rd, leader=False, durable=(2, "n1"), latest=HardState(2, "n1", 4))
    assert _kinds(steps) == [
        "KeepHardState",
        "SaveSnapshot",
        "HandOutSnapshot",
        "Send(late)",
        "Advance",
    ]
    assert isinstance(steps[1], SaveSnapshot) and isinstance(steps[2], HandOutSnapshot)
    assert steps[1].snapshot is snap


def test_every_plan_ends_with_advance_and_an_empty_ready_is_only_that() -> None:
    steps = plan_ready(Ready(), leader=False, durable=(0, None), latest=HardState())
    assert steps == (Advance(),)
    assert not isinstance(steps[0], KeepHardState)
