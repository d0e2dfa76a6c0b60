"""The logical dump of the state database (confman.node.state.dump): a round trip gives the
same state (``state_digest``), the dump is one consistent read while the writer goes on, and
a damaged, incomplete or inconsistent stream is refused with nothing left on disk."""

from __future__ import annotations

import io
import sqlite3
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google_crc32c
import msgpack
import pytest

from confman.node.state.commands import PutConfig, PutNamespace, Request, encode_request
from confman.node.state.commands import format_timestamp as fmt
from confman.node.state.dump import Dump, DumpError, load_dump
from confman.node.state.machine import StateMachine
from confman.raft.types import Entry

_REC = struct.Struct(">BIII")


def _entries(start: int, n: int, value_bytes: int = 2000) -> Iterator[Entry]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for k in range(n):
        i = start + k
        ts = fmt(t0 + timedelta(seconds=i))
        cmd = (
            PutNamespace("app", "the app", "ops")
            if i == 1
            else PutConfig("app", f"k{i % 50}", f"v{i}-" + "x" * value_bytes)
        )
        yield Entry(1, i, data=encode_request(Request(cmd, "tester", ts)))


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[StateMachine]:
    machine = StateMachine(tmp_path / "state.db")
    entries = list(_entries(1, 1200))
    for at in range(0, len(entries), 64):
        machine.apply(entries[at : at + 64])
    yield machine
    machine.close()


def _records(sm: StateMachine) -> list[bytes]:
    conn = sqlite3.connect(sm.db_path, isolation_level=None)
    try:
        dump = Dump(conn)
        try:
            return list(dump.records())
        finally:
            dump.close()
    finally:
        conn.close()


def _load(records: list[bytes], path: Path) -> None:
    load_dump(io.BytesIO(b"".join(records)), path)


def _reframe(record: bytes, payload: bytes) -> bytes:
    kind, seq, _, _ = _REC.unpack_from(record)
    return _REC.pack(kind, seq, len(payload), google_crc32c.value(payload)) + payload


def test_round_trip_gives_the_same_state(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    assert len(records) > 4, "expected several chunks (values of ~2 KB, 1,200 entries)"
    assert all(len(r) <= 1 << 20 for r in records[1:-1])
    out = tmp_path / "copy.db"
    _load(records, out)
    copy = StateMachine(out)
    try:
        assert copy.state_digest() == sm.state_digest()
        assert copy.applied_index == sm.applied_index == 1200
        assert copy.conf_state() == sm.conf_state()
    finally:
        copy.close()
    end = msgpack.unpackb(records[-1][_REC.size :])
    assert end["digest"] == sm.state_digest()


def test_dump_is_one_consistent_read_while_apply_goes_on(sm: StateMachine, tmp_path: Path) -> None:
    before = sm.state_digest()
    conn = sqlite3.connect(sm.db_path, isolation_level=None)
    dump = Dump(conn)
    gen = dump.records()
    first = next(gen)  # header at the read transaction's index
    sm.apply(list(_entries(1201, 64)))  # the writer goes on (WAL mode: not blocked)
    records = [first, *gen]
    dump.close()
    conn.close()
    assert dump.header.index == 1200
    out = tmp_path / "copy.db"
    _load(records, out)
    copy = StateMachine(out)
    try:
        assert copy.state_digest() == before != sm.state_digest()
    finally:
        copy.close()


def _refused(records: list[bytes], tmp_path: Path, match: str) -> None:
    out = tmp_path / "bad.db"
    with pytest.raises(DumpError, match=match):
        _load(records, out)
    assert not out.exists(), "a refused dump left its database behind"


def test_corrupt_chunk_is_refused(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    bad = bytearray(records[2])
    bad[len(bad) // 2] ^= 0x01
    _refused([*records[:2], bytes(bad), *records[3:]], tmp_path, "CRC32C mismatch")


def test_wrong_crc_is_refused(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    kind, seq, length, crc = _REC.unpack_from(records[2])
    bad = _REC.pack(kind, seq, length, crc ^ 1) + records[2][_REC.size :]
    _refused([*records[:2], bad, *records[3:]], tmp_path, "CRC32C mismatch")


def test_missing_chunk_is_refused(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    _refused([*records[:2], *records[3:]], tmp_path, "missing or repeated")


def test_truncated_stream_is_refused(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    _refused(records[:-1], tmp_path, "truncated")


def test_wrong_row_count_is_refused(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    end = msgpack.unpackb(records[-1][_REC.size :])
    table = next(t for t, n in end["rows"].items() if n > 1)
    end["rows"][table] -= 1
    _refused([*records[:-1], _reframe(records[-1], msgpack.packb(end))], tmp_path, "row counts")


def test_wrong_chunk_count_and_digest_are_refused(sm: StateMachine, tmp_path: Path) -> None:
    records = _records(sm)
    end = msgpack.unpackb(records[-1][_REC.size :])
    wrong = dict(end, chunks=end["chunks"] + 1)
    _refused([*records[:-1], _reframe(records[-1], msgpack.packb(wrong))], tmp_path, "chunks")
    wrong = dict(end, digest="0" * 64)
    _refused([*records[:-1], _reframe(records[-1], msgpack.packb(wrong))], tmp_path, "digest")


def test_rows_changed_in_flight_fail_the_digest(sm: StateMachine, tmp_path: Path) -> None:
    """A chunk re-encoded with other rows (valid CRC) is caught by the digest."""
    records = _records(sm)
    payload = records[2][_REC.size :]
    head, rows = payload[:5], msgpack.unpackb(payload[5:])
    rows[0] = [rows[0][0], *(c if not isinstance(c, str) else c + "!" for c in rows[0][1:])]
    changed = head + msgpack.packb(rows, use_bin_type=True)
    _refused([*records[:2], _reframe(records[2], changed), *records[3:]], tmp_path, "digest")


def test_not_a_dump_is_refused(tmp_path: Path) -> None:
    _refused([b"CONFSNAP" + b"\0" * 40], tmp_path, "not a Confman dump")
