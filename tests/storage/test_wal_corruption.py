"""Every bit flip and every truncation of a segment is detected.

Damage to the last record of the last segment is indistinguishable from a crash during its
write, so it is cut off; damage anywhere else stops the WAL with an error naming the file
and the byte offset of the damaged record.
"""

from __future__ import annotations

import re

import pytest

from confman.node.storage.faultfs import FaultFS
from confman.node.storage.wal import WAL, WALCorruptError, WALVersionError
from confman.raft.types import Entry, HardState
from tests.storage.helpers import HEADER_SIZE, LogModel, State, as_tuple, record_spans

D = "/wal"
SEGMENT_BYTES = 400
VERSION_FIELD = range(8, 12)


class Built:
    """A two-segment WAL and the state after every record of its last segment."""

    def __init__(self) -> None:
        fs = FaultFS()
        model = LogModel()
        self.state_at: dict[int, State] = {}  # end offset in the last segment -> state
        w = WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES)
        i = 0
        while len(w.segment_names()) < 2 or len(self.state_at) < 6:
            i += 1
            if i % 3 == 0:  # one record per save, so record ends are save boundaries
                op = (HardState(1, "n1", i - 1), [])
            else:
                nxt = model.last_index + 1
                op = (None, [Entry(1, nxt, data=bytes([i]) * (10 + i))])
            before = model.state()
            if i == 11:
                w.save_snapshot_marker(4, 1)
                model.marker(4, 1)
            else:
                w.save(*op)
                model.save(*op)
            if len(w.segment_names()) == 2:
                if not self.state_at:
                    rolled_from = before  # the state the new segment's preamble restates
                self.state_at[w._size] = model.state()
        self.names = w.segment_names()
        w.close()
        self.files = fs.files(D)
        last = self.files[self.names[1]]
        spans = record_spans(last)
        self.state_at[spans[1][1]] = rolled_from  # preamble end
        self.final = model.state()

    def fs_with(self, name: str, data: bytes) -> FaultFS:
        fs = FaultFS()
        fs.make_dirs(D)
        for n, content in self.files.items():
            fs.put(f"{D}/{n}", data if n == name else content)
        return fs


@pytest.fixture(scope="module")
def built() -> Built:
    b = Built()
    assert len(b.names) == 2
    return b


def _record_start(spans: list[tuple[int, int]], offset: int) -> int:
    """Offset of the record holding byte ``offset`` (0 inside the header)."""
    return next((a for a, e in spans if a <= offset < e), 0)


def _expect_error(fs: FaultFS, path: str, offset: int, byte: int | None = None) -> None:
    with pytest.raises((WALCorruptError, WALVersionError)) as info:
        WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES)
    if isinstance(info.value, WALVersionError):
        assert byte in VERSION_FIELD and path in str(info.value)
        return
    assert str(info.value).startswith(f"{path}: offset {offset}:"), str(info.value)
    assert (info.value.path, info.value.offset) == (path, offset)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << (offset % 8))]) + data[offset + 1 :]


def test_setup_replays_cleanly(built: Built) -> None:
    fs = built.fs_with("", b"")
    with WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES) as w:
        assert as_tuple(w.replay()) == built.final
    assert fs.files(D) == built.files


def test_bit_flip_anywhere_in_a_sealed_segment_stops_the_wal(built: Built) -> None:
    name = built.names[0]
    data = built.files[name]
    spans = record_spans(data)
    for offset in range(len(data)):
        fs = built.fs_with(name, _flip(data, offset))
        _expect_error(fs, f"{D}/{name}", _record_start(spans, offset), offset)


def test_bit_flip_in_the_last_segment(built: Built) -> None:
    name = built.names[1]
    path = f"{D}/{name}"
    data = built.files[name]
    spans = record_spans(data)
    last_start = spans[-1][0]
    repaired = 0
    for offset in range(len(data)):
        fs = built.fs_with(name, _flip(data, offset))
        if offset < last_start:  # header, preamble or a record followed by valid ones
            _expect_error(fs, path, _record_start(spans, offset), offset)
            continue
        with WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES) as w:
            assert as_tuple(w.replay()) == built.state_at[last_start]
        assert fs.read(path) == data[:last_start]  # the torn tail was cut off, durably
        assert fs.crash(offset).read(path) == data[:last_start]
        repaired += 1
    assert repaired == len(data) - last_start > 0


def test_truncation_of_a_sealed_segment_at_any_length_stops_the_wal(built: Built) -> None:
    name = built.names[0]
    data = built.files[name]
    spans = record_spans(data)
    ends = {e for _, e in spans}
    for length in range(len(data)):
        fs = built.fs_with(name, data[:length])
        if length < HEADER_SIZE:
            expected = 0
        elif length in ends or length == HEADER_SIZE:
            expected = length  # whole records lost: the next segment does not continue
        else:
            expected = _record_start(spans, length)
        _expect_error(fs, f"{D}/{name}", expected)


def test_truncation_of_the_last_segment_keeps_whole_records(built: Built) -> None:
    name = built.names[1]
    path = f"{D}/{name}"
    data = built.files[name]
    spans = record_spans(data)
    preamble_end = spans[1][1]
    for length in range(len(data) + 1):
        fs = built.fs_with(name, data[:length])
        if length < preamble_end:  # segments are complete before they get their name
            expected = 0 if length < HEADER_SIZE else _record_start(spans, length)
            if length in {e for _, e in spans} or length == HEADER_SIZE:
                expected = length
            _expect_error(fs, path, expected)
            continue
        keep = max(e for e in [*built.state_at] if e <= length)
        with WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES) as w:
            assert as_tuple(w.replay()) == built.state_at[keep]
        assert fs.read(path) == data[:keep]


def test_error_message_names_file_and_offset(built: Built) -> None:
    name = built.names[0]
    data = built.files[name]
    a, _ = record_spans(data)[3]
    fs = built.fs_with(name, _flip(data, a + 12))
    with pytest.raises(WALCorruptError) as info:
        WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES)
    assert re.fullmatch(rf"{D}/{name}: offset {a}: .+", str(info.value))
