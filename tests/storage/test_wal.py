"""Unit tests of the segmented WAL: replay semantics, validation, markers, release, format."""

from __future__ import annotations

import os
import struct

import pytest

from confman.node.storage.faultfs import FaultFS, SimulatedCrash
from confman.node.storage.wal import WAL, WALCorruptError, WALError, WALVersionError
from confman.raft.types import Entry, EntryType, HardState
from tests.storage.helpers import HEADER_SIZE, LogModel, as_tuple, record_spans

D = "/wal"


def ents(term: int, lo: int, hi: int, size: int = 20) -> list[Entry]:
    """Entries lo..hi inclusive whose data names them."""
    return [
        Entry(term, i, data=f"{term}:{i}:".encode().ljust(size, b".")) for i in range(lo, hi + 1)
    ]


def reopen(fs, segment_bytes: int = 1 << 20) -> WAL:
    return WAL.open(D, fs=fs, segment_bytes=segment_bytes)


def replayed(fs, segment_bytes: int = 1 << 20):
    with reopen(fs, segment_bytes) as w:
        return as_tuple(w.replay())


def test_fresh_wal_is_empty_with_one_segment() -> None:
    fs = FaultFS()
    with WAL.open(D, fs=fs) as w:
        st = w.replay()
        assert (st.hard_state, st.snapshot_index, st.entries) == (HardState(), 0, [])
        assert w.segment_names() == ["0000000000000001-0000000000000001.wal"]
    assert list(fs.files(D)) == ["0000000000000001-0000000000000001.wal"]


def test_round_trip_on_the_real_file_system(tmp_path) -> None:
    d = tmp_path / "wal"
    model = LogModel()
    with WAL.open(d, segment_bytes=2048) as w:
        for k in range(1, 40):
            batch = ents(1, 2 * k - 1, 2 * k, size=100)
            hs = HardState(1, "n1", 2 * k - 2)
            w.save(hs, batch)
            model.save(hs, batch)
        names = w.segment_names()
    assert len(names) > 2
    assert sorted(os.listdir(d)) == names
    with WAL.open(d, segment_bytes=2048) as w:
        assert as_tuple(w.replay()) == model.state()
        assert w.last_index == 78


def test_later_entries_replace_the_suffix_and_survive_restart() -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(HardState(1, "a", 0), ents(1, 1, 10))
        w.save(HardState(2, "b", 3), ents(2, 6, 7))  # conflict: 6..10 replaced by 6..7
        assert w.last_index == 7
    model = LogModel()
    model.save(HardState(1, "a", 0), ents(1, 1, 10))
    model.save(HardState(2, "b", 3), ents(2, 6, 7))
    state = replayed(fs)
    assert state == model.state()
    assert [(e.index, e.term) for e in state[3]][-3:] == [(5, 1), (6, 2), (7, 2)]
    with reopen(fs) as w:  # appending after the replacement continues from 8
        w.save(None, ents(2, 8, 8))
    assert [e.index for e in replayed(fs)[3]] == list(range(1, 9))


def test_hard_state_only_and_empty_saves() -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(None, [])
        ops = fs.ops
        w.save(None, [])  # nothing to do: no I/O at all
        assert fs.ops == ops
        w.save(HardState(5, None, 0), [])
    assert replayed(fs)[0] == HardState(5, None, 0)


def test_entry_types_and_binary_data_survive() -> None:
    fs = FaultFS()
    batch = [Entry(1, 1, EntryType.CONF_CHANGE, b"\x00\xff" * 10), Entry(1, 2, data=b"")]
    with reopen(fs) as w:
        w.save(None, batch)
    assert list(replayed(fs)[3]) == batch


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (ents(1, 7, 8), "entries start at 7"),  # gap after last index 5
        ([*ents(1, 6, 6), *ents(1, 8, 8)], "not contiguous"),
        (ents(1, 3, 4), "entries start at 3"),  # at or below the snapshot (3)
    ],
)
def test_invalid_saves_are_refused_without_writing(batch, match: str) -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(None, ents(1, 1, 5))
        w.save_snapshot_marker(3, 1)
        before = fs.files(D)
        with pytest.raises(ValueError, match=match):
            w.save(HardState(9), batch)
        assert fs.files(D) == before
        w.save(None, ents(1, 6, 6))  # still usable
    assert [e.index for e in replayed(fs)[3]] == [4, 5, 6]


def test_unsynced_saves_become_durable_with_sync() -> None:
    for seed in range(20):
        fs = FaultFS()
        w = reopen(fs)
        w.save(HardState(1), ents(1, 1, 3), sync=False)
        w.save(HardState(2), ents(2, 4, 6), sync=False)
        w.sync()
        state = replayed(fs.crash(seed))
        assert state[0] == HardState(2)
        assert [e.index for e in state[3]] == [1, 2, 3, 4, 5, 6]


def test_marker_keeps_the_suffix_when_the_log_matches() -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(None, ents(1, 1, 10))
        w.save_snapshot_marker(6, 1)
        assert (w.snapshot_index, w.last_index) == (6, 10)
        w.save_snapshot_marker(6, 1)  # repeating the current marker is a no-op
    _, snap, term, log = replayed(fs)
    assert (snap, term, [e.index for e in log]) == (6, 1, [7, 8, 9, 10])


@pytest.mark.parametrize(("index", "term"), [(6, 3), (15, 3)], ids=["diverged", "beyond"])
def test_marker_drops_a_log_that_does_not_contain_it(index: int, term: int) -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(None, ents(1, 1, 10))
        w.save_snapshot_marker(index, term)
        assert w.last_index == index
        with pytest.raises(ValueError):
            w.save(None, ents(3, index + 2, index + 2))
        w.save(None, ents(3, index + 1, index + 2))
    _, snap, snap_term, log = replayed(fs)
    assert (snap, snap_term) == (index, term)
    assert [(e.index, e.term) for e in log] == [(index + 1, 3), (index + 2, 3)]


def test_older_or_conflicting_markers_are_refused() -> None:
    with reopen(FaultFS()) as w:
        w.save(None, ents(1, 1, 10))
        w.save_snapshot_marker(6, 1)
        with pytest.raises(ValueError, match="conflicts"):
            w.save_snapshot_marker(5, 1)
        with pytest.raises(ValueError, match="conflicts"):
            w.save_snapshot_marker(6, 2)


def _fill(w: WAL, model: LogModel, lo: int, hi: int, term: int = 1) -> None:
    for i in range(lo, hi + 1):
        hs = HardState(term, "n1", i - 1)
        w.save(hs, ents(term, i, i, size=100))
        model.save(hs, ents(term, i, i, size=100))


def test_many_segments_replay_and_roll_with_preamble() -> None:
    fs = FaultFS()
    model = LogModel()
    with reopen(fs, 1024) as w:
        _fill(w, model, 1, 400)
        names = w.segment_names()
    assert len(names) > 50
    seqs = [int(n[:16]) for n in names]
    assert seqs == list(range(1, len(names) + 1))
    firsts = [int(n[17:33]) for n in names]
    assert firsts == sorted(firsts) and firsts[0] == 1
    assert all(len(b) < 1024 + 300 for b in fs.files(D).values())
    assert replayed(fs, 1024) == model.state()


def test_release_deletes_exactly_the_segments_below_the_snapshot() -> None:
    fs = FaultFS()
    model = LogModel()
    w = reopen(fs, 1024)
    _fill(w, model, 1, 200)
    names = w.segment_names()
    firsts = [int(n[17:33]) for n in names]
    w.save_snapshot_marker(120, 1)
    model.marker(120, 1)
    with pytest.raises(ValueError, match="snapshot is at 120"):
        w.release_to(121)
    removed = w.release_to(120)
    # segment k may go when the next one starts at or below 121
    expected = sum(1 for k in range(len(names) - 1) if firsts[k + 1] - 1 <= 120)
    assert removed == expected > 0
    assert sorted(fs.files(D)) == names[removed:] + w.segment_names()[len(names) - removed :]
    assert int(w.segment_names()[0][17:33]) <= 121 < int(w.segment_names()[1][17:33])
    assert w.release_to(120) == 0
    _fill(w, model, 201, 220)
    w.close()
    assert replayed(fs, 1024) == model.state()
    for seed in range(10):  # removals are made durable
        assert sorted(fs.crash(seed).files(D)) == sorted(fs.files(D))


def test_release_never_deletes_the_current_segment() -> None:
    fs = FaultFS()
    with reopen(fs, 1024) as w:
        w.save(None, ents(1, 1, 5))
        w.save_snapshot_marker(5, 1)
        assert w.release_to(5) == 0
        assert len(w.segment_names()) == 1


def test_wal_size_stays_flat_with_regular_snapshots() -> None:
    fs = FaultFS()
    model = LogModel()
    sizes = []
    with reopen(fs, 2048) as w:
        for round_ in range(30):
            lo = round_ * 50 + 1
            _fill(w, model, lo, lo + 49)
            w.save_snapshot_marker(lo + 40, 1)
            model.marker(lo + 40, 1)
            w.release_to(lo + 40)
            sizes.append(sum(map(len, fs.files(D).values())))
    assert max(sizes[15:]) <= max(sizes[5:15])  # no growth with uptime
    assert max(sizes) < 20_000
    assert replayed(fs, 2048) == model.state()


def test_preamble_restates_state_so_released_wal_replays_hard_state_and_marker() -> None:
    fs = FaultFS()
    model = LogModel()
    with reopen(fs, 512) as w:
        _fill(w, model, 1, 30)
        w.save_snapshot_marker(30, 1)
        model.marker(30, 1)
        w.save(HardState(7, "x", 30), [])
        model.save(HardState(7, "x", 30), [])
        _fill(w, model, 31, 40, term=7)  # rolls: new segments restate hard state and marker
        w.release_to(30)
    assert replayed(fs, 512) == model.state()


def test_replay_is_only_available_before_writing() -> None:
    with reopen(FaultFS()) as w:
        w.replay()
        w.save(None, ents(1, 1, 1))
        with pytest.raises(WALError, match="before the first write"):
            w.replay()


def test_closed_wal_refuses_writes() -> None:
    w = reopen(FaultFS())
    w.close()
    with pytest.raises(WALError, match="closed"):
        w.save(None, ents(1, 1, 1))


def test_wal_refuses_use_after_an_io_failure() -> None:
    fs = FaultFS()
    w = reopen(fs)
    fs.crash_after = fs.ops + 1  # the write succeeds, the fdatasync fails
    with pytest.raises(SimulatedCrash):
        w.save(None, ents(1, 1, 1))
    fs.crash_after = None
    fs.crashed = False
    with pytest.raises(WALError, match="unusable"):
        w.save(None, ents(1, 1, 1))


def _first_segment(fs) -> tuple[str, bytes]:
    name, data = next(iter(fs.files(D).items()))
    return f"{D}/{name}", data


def test_unknown_format_version_is_a_clear_error() -> None:
    fs = FaultFS()
    reopen(fs).close()
    path, data = _first_segment(fs)
    fs.put(path, data[:8] + struct.pack("<I", 2) + data[12:])
    with pytest.raises(WALVersionError, match="version 2 is not supported"):
        reopen(fs)


def test_bad_magic_and_renamed_segment_are_corruption() -> None:
    fs = FaultFS()
    reopen(fs).close()
    path, data = _first_segment(fs)
    fs.put(path, b"X" + data[1:])
    with pytest.raises(WALCorruptError, match="bad magic"):
        reopen(fs)
    fs.put(path, data)
    fs.remove(path)
    fs.put(f"{D}/0000000000000001-0000000000000005.wal", data)
    with pytest.raises(WALCorruptError, match="header says segment 1-1"):
        reopen(fs)


def test_missing_segment_is_corruption_naming_the_file() -> None:
    fs = FaultFS()
    with reopen(fs, 512) as w:
        _fill(w, LogModel(), 1, 30)
        names = w.segment_names()
    fs.remove(f"{D}/{names[2]}")
    with pytest.raises(WALCorruptError, match=f"{names[3]}: offset 0: segment 3 is missing"):
        reopen(fs, 512)


def test_leftover_temporary_segment_is_removed_and_other_files_ignored() -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(None, ents(1, 1, 3))
    fs.put(f"{D}/0000000000000002-0000000000000004.wal.tmp", b"partial")
    fs.put(f"{D}/README", b"not a segment")
    assert [e.index for e in replayed(fs)[3]] == [1, 2, 3]
    assert sorted(fs.files(D)) == ["0000000000000001-0000000000000001.wal", "README"]


def test_record_copied_to_another_offset_is_not_replayed() -> None:
    fs = FaultFS()
    with reopen(fs) as w:
        w.save(None, ents(1, 1, 1))
        w.save(None, ents(1, 2, 2))
    path, data = _first_segment(fs)
    start, end = record_spans(data)[-1]
    fs.put(path, data + data[start:end])  # a verbatim duplicate of the last record
    assert [e.index for e in replayed(fs)[3]] == [1, 2]
    assert fs.read(path) == data  # cut off as a torn tail


def test_records_swapped_in_a_sealed_segment_are_corruption() -> None:
    fs = FaultFS()
    with reopen(fs, 150) as w:
        w.save(None, ents(1, 1, 1))
        w.save(None, ents(1, 2, 2))
        w.save(None, ents(1, 3, 3))  # rolls
        names = w.segment_names()
    assert len(names) == 2
    path = f"{D}/{names[0]}"
    data = fs.read(path)
    (a, b), (c, e) = record_spans(data)[-2:]
    assert b == c
    fs.put(path, data[:a] + data[c:e] + data[a:b])
    with pytest.raises(WALCorruptError, match=f"{path}: offset {a}"):
        reopen(fs, 150)


def test_header_is_forty_bytes_as_documented() -> None:
    fs = FaultFS()
    reopen(fs).close()
    _, data = _first_segment(fs)
    assert data[:8] == b"CONFWAL\n"
    assert record_spans(data)[0][0] == HEADER_SIZE
