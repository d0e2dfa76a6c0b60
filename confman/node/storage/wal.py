"""The write-ahead log: durable Raft entries, hard state and snapshot markers.

A WAL is a directory of segment files ``<seq>-<first index>.wal`` (16 digits each), written
strictly in sequence and read only when the WAL is opened. A segment is a header followed
by records; the first records of every segment restate the hard state and snapshot marker
current when it was created, so the oldest segments can be deleted once a snapshot covers
them (``release_to``).

Segment header, format version 1 (little-endian, 40 bytes)::

    magic b"CONFWAL\\n" | u32 version | u64 seq | u64 first_index | 8-byte nonce | u32 crc

Record::

    u32 crc | u32 length | u8 type | payload (length bytes)

The record CRC (CRC32C) covers the segment header, the record's byte offset, length, type
and payload, so every bit flip and truncation is detected, and so is a record copied from
another offset or another segment. Replay semantics: an entry with index i written later
replaces all entries >= i written earlier (that is how a conflicting-suffix truncation
becomes durable); a snapshot marker (index, term) drops the entries <= index, and drops the
whole log if the log has no entry (index, term) (an installed snapshot replaces a log that
diverged from it).

Damage at the tail of the last segment (a torn or partial record followed only by
garbage, i.e. no valid record after it) is cut off when the WAL is opened; damage
anywhere else raises ``WALCorruptError`` naming the file and byte offset.
"""

from __future__ import annotations

import itertools
import os
import re
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import google_crc32c

from confman.node.codec import (
    CodecError,
    decode_entries,
    decode_hard_state,
    encode_entries,
    encode_hard_state,
)
from confman.node.storage.files import AppendFile, FileSystem, OSFileSystem
from confman.raft.types import EMPTY_HARD_STATE, Entry, HardState

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FORMAT_VERSION",
    "WAL",
    "WALCorruptError",
    "WALError",
    "WALVersionError",
    "WalState",
    "segment_name",
]

FORMAT_VERSION = 1
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAGIC = b"CONFWAL\n"

_HEADER = struct.Struct("<8sIQQ8sI")
_PREFIX = struct.Struct("<8sI")  # magic and version: all a reader needs to dispatch
_RECORD = struct.Struct("<IIB")
_CRC_CONTEXT = struct.Struct("<QIB")  # offset, length, type: mixed into the record CRC
_MARKER = struct.Struct("<QQ")
_NAME = re.compile(r"^(\d{16})-(\d{16})\.wal$")
_TMP_SUFFIX = ".tmp"

REC_ENTRIES = 1
REC_HARD_STATE = 2
REC_SNAPSHOT_MARKER = 3
_REC_TYPES = frozenset((REC_ENTRIES, REC_HARD_STATE, REC_SNAPSHOT_MARKER))
_PREAMBLE_TYPES = (REC_HARD_STATE, REC_SNAPSHOT_MARKER)  # first records of every segment
_PREAMBLE_RECORDS = len(_PREAMBLE_TYPES)

_crc = google_crc32c.value
_extend = google_crc32c.extend


class WALError(Exception):
    """Base error of the WAL."""


class WALCorruptError(WALError):
    """The WAL is damaged somewhere other than a torn tail; the message names file and offset."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: offset {offset}: {reason}")
        self.path = path
        self.offset = offset


class WALVersionError(WALError):
    """A segment was written in a format version this code cannot read."""


@dataclass(slots=True)
class WalState:
    """What replaying the WAL recovers: hard state, snapshot point and the log after it."""

    hard_state: HardState = EMPTY_HARD_STATE
    snapshot_index: int = 0
    snapshot_term: int = 0
    entries: list[Entry] = field(default_factory=list)


def segment_name(seq: int, first_index: int) -> str:
    """File name of segment ``seq`` whose first new entry has index ``first_index``."""
    return f"{seq:016d}-{first_index:016d}.wal"


@dataclass(slots=True)
class _Segment:
    seq: int
    first_index: int
    name: str


# -- encoding ----------------------------------------------------------------------------
def _header(seq: int, first_index: int, nonce: bytes) -> bytes:
    body = _HEADER.pack(MAGIC, FORMAT_VERSION, seq, first_index, nonce, 0)[:-4]
    return body + struct.pack("<I", _crc(body))


def _record(seed: int, offset: int, rtype: int, payload: bytes) -> bytes:
    n = len(payload)
    crc = _extend(_extend(seed, _CRC_CONTEXT.pack(offset, n, rtype)), payload)
    return _RECORD.pack(crc, n, rtype) + payload


# -- decoding ----------------------------------------------------------------------------
def _read_header_v1(buf: bytes, path: str) -> tuple[int, int, int]:
    """(seq, first_index, crc seed) of a version-1 segment."""
    if len(buf) < _HEADER.size:
        raise WALCorruptError(path, 0, "segment header is truncated")
    _, _, seq, first, _, crc = _HEADER.unpack_from(buf)
    if _crc(buf[: _HEADER.size - 4]) != crc:
        raise WALCorruptError(path, 0, "segment header checksum mismatch")
    return seq, first, _crc(buf[: _HEADER.size])


_HEADER_READERS = {1: _read_header_v1}


def _read_header(buf: bytes, path: str) -> tuple[int, int, int, int]:
    """(version, seq, first_index, crc seed); dispatches on the format version."""
    if len(buf) < _PREFIX.size or buf[: len(MAGIC)] != MAGIC:
        raise WALCorruptError(path, 0, "not a WAL segment (bad magic)")
    version = _PREFIX.unpack_from(buf)[1]
    reader = _HEADER_READERS.get(version)
    if reader is None:
        raise WALVersionError(
            f"{path}: WAL format version {version} is not supported "
            f"(this build reads {sorted(_HEADER_READERS)})"
        )
    return (version, *reader(buf, path))


def _record_at(buf: bytes, pos: int, seed: int) -> tuple[int, int] | None:
    """(type, end) of a valid record starting at ``pos``, else None."""
    if pos + _RECORD.size > len(buf):
        return None
    crc, n, rtype = _RECORD.unpack_from(buf, pos)
    start = pos + _RECORD.size
    end = start + n
    if rtype not in _REC_TYPES or end > len(buf):
        return None
    if _extend(_extend(seed, _CRC_CONTEXT.pack(pos, n, rtype)), buf[start:end]) != crc:
        return None
    return rtype, end


def _valid_record_after(buf: bytes, pos: int, seed: int) -> int | None:
    """Offset of the first valid record starting after ``pos``, if any."""
    type_at = _RECORD.size - 1
    for p in range(pos + 1, len(buf) - _RECORD.size + 1):
        if buf[p + type_at] in _REC_TYPES and _record_at(buf, p, seed) is not None:
            return p
    return None


class _Replayer:
    """Applies records in order, tracking what ``WAL.replay`` returns."""

    def __init__(self) -> None:
        self.state = WalState()
        self.origin = ("", 0)  # where the first kept entry batch is, for error messages
        self.segment_end: tuple[str, int] | None = None  # (path, length) of the last segment

    def entries(self, batch: list[Entry], where: tuple[str, int]) -> None:
        for k in range(1, len(batch)):
            if batch[k].index != batch[k - 1].index + 1:
                raise WALCorruptError(*where, "entry batch is not contiguous")
        ents = self.state.entries
        i = batch[0].index
        if i <= self.state.snapshot_index:
            raise WALCorruptError(*where, f"entry {i} is at or below the snapshot")
        if not ents or i < ents[0].index:
            self.state.entries = batch
            self.origin = where
            return
        base = ents[0].index
        if i > base + len(ents):
            raise WALCorruptError(*where, f"gap: entry {i} follows {base + len(ents) - 1}")
        del ents[i - base :]
        ents.extend(batch)

    def marker(self, index: int, term: int, where: tuple[str, int]) -> None:
        st = self.state
        if index < st.snapshot_index:
            raise WALCorruptError(*where, f"snapshot marker {index} < {st.snapshot_index}")
        st.snapshot_index, st.snapshot_term = index, term
        ents = st.entries
        if not ents or index < ents[0].index:
            return  # nothing to drop (entries below the first kept one are already gone)
        base = ents[0].index
        if index - base < len(ents) and ents[index - base].term == term:
            del ents[: index - base + 1]
        else:
            st.entries = []

    def carried(self) -> tuple[HardState, int, int, int | None]:
        """What the next segment's preamble and name must restate."""
        st = self.state
        last = st.entries[-1].index if st.entries else None
        return st.hard_state, st.snapshot_index, st.snapshot_term, last

    def check_continues(
        self, carried: tuple[HardState, int, int, int | None], first_index: int, path: str
    ) -> None:
        """A segment must begin where the previous one ended, else that one lost records."""
        hs, snap_index, snap_term, last = carried
        st = self.state
        expected_first = snap_index + 1 if last is None else last + 1
        if (
            (hs, snap_index, snap_term) != (st.hard_state, st.snapshot_index, st.snapshot_term)
            or (last is not None and first_index != expected_first)
            or first_index < expected_first
        ):
            assert self.segment_end is not None
            raise WALCorruptError(
                *self.segment_end,
                f"sealed segment ends in a state that {os.path.basename(path)} does not "
                "continue from: records are missing",
            )

    def finish(self) -> WalState:
        st = self.state
        if st.entries and st.entries[0].index != st.snapshot_index + 1:
            raise WALCorruptError(
                *self.origin,
                f"log starts at {st.entries[0].index} but the snapshot is at "
                f"{st.snapshot_index}: entries are missing",
            )
        return st


# -- the WAL -----------------------------------------------------------------------------
class WAL:
    """A segmented, append-only write-ahead log (single writer; no asyncio)."""

    def __init__(self, directory: str, fs: FileSystem, segment_bytes: int) -> None:
        """Use ``WAL.open``."""
        self.dir = directory
        self._fs = fs
        self._segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._file: AppendFile | None = None
        self._seed = 0
        self._size = 0
        self._unsynced = False
        self._failed: BaseException | None = None
        self._recovered: WalState | None = None
        self._hard_state = EMPTY_HARD_STATE
        self._snap_index = 0
        self._snap_term = 0
        self._terms = array("Q")  # terms of entries snap_index+1 .. last_index

    # -- opening and replay --------------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        fs: FileSystem | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> WAL:
        """Open the WAL in ``directory`` (created if missing), repairing a torn tail."""
        wal = cls(os.fspath(directory), fs or OSFileSystem(), segment_bytes)
        wal._load()
        return wal

    def replay(self) -> WalState:
        """The state recovered at open; only before the first write (then it is dropped)."""
        if self._recovered is None:
            raise WALError("replay() is only available before the first write")
        return self._recovered

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _load(self) -> None:
        fs = self._fs
        fs.make_dirs(self.dir)
        names = fs.list_dir(self.dir)
        stale = [n for n in names if n.endswith(_TMP_SUFFIX)]
        for n in stale:  # a segment whose creation did not complete
            fs.remove(self._path(n))
        if stale:
            fs.sync_dir(self.dir)
        segs = sorted(
            (_Segment(int(m[1]), int(m[2]), n) for n in names if (m := _NAME.match(n))),
            key=lambda s: s.seq,
        )
        for a, b in itertools.pairwise(segs):
            if b.seq != a.seq + 1:
                raise WALCorruptError(self._path(b.name), 0, f"segment {a.seq + 1} is missing")
        if not segs:
            self._recovered = WalState()
            self._create_segment(1, 1)
            return
        rep = _Replayer()
        for k, seg in enumerate(segs):
            end = self._replay_segment(seg, rep, last=k == len(segs) - 1)
        st = rep.finish()
        self._segments = segs
        self._hard_state = st.hard_state
        self._snap_index, self._snap_term = st.snapshot_index, st.snapshot_term
        self._terms = array("Q", (e.term for e in st.entries))
        self._recovered = st
        self._file = fs.open_append(self._path(segs[-1].name))
        self._size = end

    def _replay_segment(self, seg: _Segment, rep: _Replayer, last: bool) -> int:
        """Apply one segment's records; returns the length of its valid part."""
        path = self._path(seg.name)
        buf = self._fs.read(path)
        _, seq, first, seed = _read_header(buf, path)
        if (seq, first) != (seg.seq, seg.first_index):
            raise WALCorruptError(path, 0, f"header says segment {seq}-{first}")
        self._seed = seed
        carried = rep.carried() if rep.segment_end is not None else None
        pos = _HEADER.size
        n = 0
        while pos < len(buf):
            rec = _record_at(buf, pos, seed)
            if rec is None:
                if n < _PREAMBLE_RECORDS:
                    raise WALCorruptError(path, pos, "segment preamble is damaged")
                self._damaged(path, buf, pos, seed, last)
                break
            rtype, end = rec
            if n < _PREAMBLE_RECORDS and rtype != _PREAMBLE_TYPES[n]:
                raise WALCorruptError(path, pos, "segment does not start with its preamble")
            self._apply(rep, path, pos, rtype, buf[pos + _RECORD.size : end])
            n += 1
            pos = end
            if n == _PREAMBLE_RECORDS and carried is not None:
                rep.check_continues(carried, first, path)
        if n < _PREAMBLE_RECORDS:
            raise WALCorruptError(path, pos, "segment preamble is missing")
        rep.segment_end = (path, pos)
        return pos

    @staticmethod
    def _apply(rep: _Replayer, path: str, pos: int, rtype: int, payload: bytes) -> None:
        where = (path, pos)
        try:
            if rtype == REC_ENTRIES:
                batch = decode_entries(payload)
                if batch:
                    rep.entries(batch, where)
            elif rtype == REC_HARD_STATE:
                rep.state.hard_state = decode_hard_state(payload)
            else:
                if len(payload) != _MARKER.size:
                    raise WALCorruptError(path, pos, "malformed snapshot marker")
                index, term = _MARKER.unpack(payload)
                rep.marker(index, term, where)
        except CodecError as e:
            raise WALCorruptError(path, pos, f"undecodable record: {e}") from e

    def _damaged(self, path: str, buf: bytes, pos: int, seed: int, last: bool) -> None:
        """Cut a torn tail off the last segment, or raise for damage elsewhere."""
        if not last:
            raise WALCorruptError(path, pos, "invalid record in a sealed segment")
        later = _valid_record_after(buf, pos, seed)
        if later is not None:
            raise WALCorruptError(path, pos, f"invalid record followed by a valid one at {later}")
        f = self._fs.open_append(path)
        try:
            f.truncate(pos)
            f.sync()
        finally:
            f.close()

    # -- writing -------------------------------------------------------------------------
    @property
    def last_index(self) -> int:
        """Index of the last entry in the log (the snapshot index if it holds none)."""
        return self._snap_index + len(self._terms)

    @property
    def snapshot_index(self) -> int:
        return self._snap_index

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def segment_names(self) -> list[str]:
        """Names of the live segment files, oldest first."""
        return [s.name for s in self._segments]

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], sync: bool = True
    ) -> None:
        """Append entries (replacing any suffix from entries[0].index) and the hard state.

        One write and, when ``sync``, one fdatasync for everything.
        """
        self._writable()
        first = 0
        if entries:
            first = entries[0].index
            if not self._snap_index < first <= self.last_index + 1:
                raise ValueError(
                    f"entries start at {first}; the log holds {self._snap_index + 1}.."
                    f"{self.last_index} (snapshot at {self._snap_index})"
                )
            for k in range(1, len(entries)):
                if entries[k].index != first + k:
                    raise ValueError(f"entries are not contiguous at position {k}")
        elif hard_state is None:
            return
        if self._size >= self._segment_bytes:
            self._roll()
        parts = []
        if entries:
            parts.append(self._rec(REC_ENTRIES, encode_entries(entries), 0))
        if hard_state is not None:
            parts.append(
                self._rec(REC_HARD_STATE, encode_hard_state(hard_state), sum(map(len, parts)))
            )
        self._write(b"".join(parts), sync)
        if entries:
            del self._terms[first - self._snap_index - 1 :]
            self._terms.extend(e.term for e in entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def save_snapshot_marker(self, index: int, term: int) -> None:
        """Record (durably) that a snapshot exists at ``index``: entries <= index may go.

        If the log has no entry (index, term), the whole log is dropped (an installed
        snapshot replaces a log that diverged from it).
        """
        self._writable()
        if index == self._snap_index and term == self._snap_term:
            return
        if index <= self._snap_index:
            raise ValueError(
                f"snapshot marker ({index}, {term}) conflicts with "
                f"({self._snap_index}, {self._snap_term})"
            )
        if self._size >= self._segment_bytes:
            self._roll()
        self._write(self._rec(REC_SNAPSHOT_MARKER, _MARKER.pack(index, term), 0), True)
        k = index - self._snap_index - 1
        if k < len(self._terms) and self._terms[k] == term:
            del self._terms[: k + 1]
        else:
            self._terms = array("Q")
        self._snap_index, self._snap_term = index, term

    def release_to(self, index: int) -> int:
        """Delete the oldest segments whose entries are all <= ``index``; returns how many.

        ``index`` must not exceed the snapshot marker. The current segment is never deleted.
        """
        self._writable()
        if index > self._snap_index:
            raise ValueError(f"cannot release to {index}: the snapshot is at {self._snap_index}")
        n = 0
        while n + 1 < len(self._segments) and self._segments[n + 1].first_index - 1 <= index:
            n += 1
        if not n:
            return 0
        self._recovered = None
        try:
            for seg in self._segments[:n]:  # oldest first: survivors always form a suffix
                self._fs.remove(self._path(seg.name))
            self._fs.sync_dir(self.dir)
        except BaseException as e:
            self._failed = e
            raise
        del self._segments[:n]
        return n

    def sync(self) -> None:
        """Make every earlier ``save(..., sync=False)`` durable."""
        self._writable()
        if self._unsynced:
            self._guard(self._current().sync)
            self._unsynced = False

    def close(self) -> None:
        """Close the current segment (without syncing writes made with sync=False)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._failed = self._failed or WALError("WAL is closed")

    def __enter__(self) -> WAL:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _writable(self) -> None:
        if self._failed is not None:
            raise WALError(f"WAL is unusable: {self._failed}") from self._failed

    def _current(self) -> AppendFile:
        assert self._file is not None
        return self._file

    def _guard(self, op: Callable[[], None]) -> None:
        """Run an I/O step; after any failure the WAL refuses further use (fsync-gate)."""
        try:
            op()
        except BaseException as e:
            self._failed = e
            raise

    def _rec(self, rtype: int, payload: bytes, delta: int) -> bytes:
        return _record(self._seed, self._size + delta, rtype, payload)

    def _write(self, data: bytes, sync: bool) -> None:
        self._recovered = None
        f = self._current()
        if sync and not self._unsynced:
            self._guard(lambda: f.write_sync(data))
            self._size += len(data)
            return
        self._guard(lambda: f.write(data))
        self._size += len(data)
        self._unsynced = True
        if sync:
            self._guard(f.sync)
            self._unsynced = False

    def _roll(self) -> None:
        """Seal the current segment and start the next one."""
        if self._unsynced:
            self._guard(self._current().sync)  # nothing later may outlive earlier writes
            self._unsynced = False
        self._current().close()
        self._file = None
        self._create_segment(self._segments[-1].seq + 1, self.last_index + 1)

    def _create_segment(self, seq: int, first_index: int) -> None:
        """Write a complete segment under a temporary name, then rename it into place."""
        name = segment_name(seq, first_index)
        tmp = self._path(name + _TMP_SUFFIX)
        header = _header(seq, first_index, os.urandom(8))
        seed = _crc(header)
        pos = len(header)
        hs = _record(seed, pos, REC_HARD_STATE, encode_hard_state(self._hard_state))
        mark = _MARKER.pack(self._snap_index, self._snap_term)
        marker = _record(seed, pos + len(hs), REC_SNAPSHOT_MARKER, mark)
        data = header + hs + marker
        fs = self._fs
        try:
            f = fs.create(tmp)
            f.write(data)
            f.sync()
            fs.rename(tmp, self._path(name))
            fs.sync_dir(self.dir)
        except BaseException as e:
            self._failed = e
            raise
        self._file = f
        self._seed = seed
        self._size = len(data)
        self._segments.append(_Segment(seq, first_index, name))
