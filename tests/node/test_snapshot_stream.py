"""Snapshots produced while they are sent (docs/storage.md §7): a `DumpSource` reads the live
database in one read transaction and rewrites the message to the index it sees; the
transport carries a stream of unknown size; the receiver builds a database from it, which
installs by rename and leaves nothing behind; a damaged stream is refused."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from confman.node.runtime_snapshots import LIVE_REF, DumpSource, open_source
from confman.node.state.dump import Dump, load_dump
from confman.node.state.machine import StateMachine
from confman.node.storage.snapshots import SnapshotCorruptError, SnapshotStore
from confman.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from tests.node.helpers import eventually, run, start_snapshot_pair, stop_nodes
from tests.storage.test_dump import _entries


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[StateMachine]:
    (tmp_path / "live").mkdir()
    machine = StateMachine(tmp_path / "live" / "state.db")
    entries = list(_entries(1, 600))
    for at in range(0, len(entries), 64):
        machine.apply(entries[at : at + 64])
    yield machine
    machine.close()


def _msg(index: int) -> Message:
    snap = Snapshot(SnapshotMeta(index, 1, ConfState(("a", "b"))), LIVE_REF)
    return Message(MessageType.SNAPSHOT, to="b", frm="a", term=2, snapshot=snap)


def _drain(src: DumpSource) -> bytes:
    out = []
    while piece := src.read():
        assert len(piece) <= 1 << 20
        out.append(piece)
    src.close()
    return b"".join(out)


def test_dump_source_rewrites_the_message_to_the_state_it_reads(sm: StateMachine) -> None:
    src = DumpSource(Path(sm.db_path), _msg(400))  # the core's snapshot was at 400
    assert src.size is None and src.message.snapshot is not None
    meta = src.message.snapshot.meta
    assert (meta.index, meta.term, meta.conf_state) == (600, 1, sm.conf_state())
    assert src.message.snapshot.data == LIVE_REF
    sm.apply(list(_entries(601, 10)))  # applied meanwhile: not in this stream
    stream = _drain(src)
    assert len(stream) > 1 << 20  # more than one piece
    copy = Path(sm.db_path).with_name("copy.db")
    header = load_dump(io.BytesIO(stream), copy)
    assert header.index == 600
    other = StateMachine(copy)
    try:
        assert other.applied_index == 600 != sm.applied_index
    finally:
        other.close()


def test_dump_source_refuses_a_state_behind_the_core(sm: StateMachine) -> None:
    with pytest.raises(RuntimeError, match="behind the snapshot"):
        DumpSource(Path(sm.db_path), _msg(601))


def test_open_source_of_unknown_reference_is_none(sm: StateMachine, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    msg = _msg(1)
    assert msg.snapshot is not None
    other = Message(msg.type, msg.to, msg.frm, msg.term, snapshot=Snapshot(msg.snapshot.meta, b"x"))
    assert open_source(store, Path(sm.db_path), other) is None
    assert open_source(store, Path(sm.db_path), Message(MessageType.SNAPSHOT, "b", "a", 2)) is None


def test_received_dump_installs_by_rename_and_nothing_stays(
    sm: StateMachine, tmp_path: Path
) -> None:
    stream = _drain(DumpSource(Path(sm.db_path), _msg(600)))
    store = SnapshotStore(tmp_path / "node2" / "snapshots")
    info = store.receive([stream[i : i + 65536] for i in range(0, len(stream), 65536)])
    assert info.path.suffix == ".db" and info.index == 600
    assert [p.name for p in store.dir.iterdir()] == [info.path.name]  # no .recv left
    other = StateMachine(tmp_path / "node2" / "state.db")
    try:
        other.restore(info.path)
        assert other.state_digest() == sm.state_digest()
        assert other.applied_index == 600
    finally:
        other.close()
    assert not any(store.dir.iterdir()), "the received snapshot stayed at rest"


def test_damaged_received_dump_is_refused_and_removed(sm: StateMachine, tmp_path: Path) -> None:
    stream = bytearray(_drain(DumpSource(Path(sm.db_path), _msg(600))))
    stream[len(stream) // 2] ^= 0x40
    store = SnapshotStore(tmp_path / "snaps")
    with pytest.raises(SnapshotCorruptError, match="refused"):
        store.receive([bytes(stream)])
    assert not any(store.dir.iterdir())


def test_stream_of_unknown_size_crosses_the_transport(sm: StateMachine, tmp_path: Path) -> None:
    async def main() -> None:
        a, b, _ = await start_snapshot_pair(tmp_path, 1)
        a.snapshot_source = lambda m: DumpSource(Path(sm.db_path), m)
        try:
            a.t.send([_msg(500)])
            await eventually(lambda: bool(a.snap_status), "snapshot status")
            assert a.snap_status == [("b", True)]
            got = [m for m in b.inbox if m.type is MessageType.SNAPSHOT]
            assert len(got) == 1 and got[0].snapshot is not None
            assert got[0].snapshot.meta.index == 600  # rewritten by the sender
            conn = sqlite3.connect(sm.db_path, isolation_level=None)
            dump = Dump(conn)
            expected = b"".join(dump.records())
            dump.close()
            conn.close()
            assert b.sinks[0].path.read_bytes() == expected
            assert expected[:8] == b"CONFDUMP"
        finally:
            await stop_nodes([a, b])

    run("asyncio", main)
