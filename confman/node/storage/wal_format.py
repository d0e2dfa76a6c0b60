"""The write-ahead log's on-disk format: segment headers, records, their CRCs, and the
rules by which ``WAL.replay`` applies records (``Replayer``).

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
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

import google_crc32c

from confman.raft.types import EMPTY_HARD_STATE, Entry, HardState

FORMAT_VERSION = 1
#: 16 MiB: a segment is deleted only when all of it is below the release point, so the
#: Raft WAL holds at most ~2 segments in steady state (docs/storage.md §1).
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
MAGIC = b"CONFWAL\n"

HEADER = struct.Struct("<8sIQQ8sI")
_PREFIX = struct.Struct("<8sI")  # magic and version: all a reader needs to dispatch
RECORD = struct.Struct("<IIB")
_CRC_CONTEXT = struct.Struct("<QIB")  # offset, length, type: mixed into the record CRC
MARKER = struct.Struct("<QQ")
SEGMENT_NAME = re.compile(r"^(\d{16})-(\d{16})\.wal$")
TMP_SUFFIX = ".tmp"

REC_ENTRIES = 1
REC_HARD_STATE = 2
REC_SNAPSHOT_MARKER = 3
_REC_TYPES = frozenset((REC_ENTRIES, REC_HARD_STATE, REC_SNAPSHOT_MARKER))
PREAMBLE_TYPES = (REC_HARD_STATE, REC_SNAPSHOT_MARKER)  # first records of every segment
PREAMBLE_RECORDS = len(PREAMBLE_TYPES)

crc32c = google_crc32c.value
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
class Segment:
    """A segment file of the WAL: its sequence number, first index and name."""

    seq: int
    first_index: int
    name: str


# -- encoding ----------------------------------------------------------------------------
def segment_header(seq: int, first_index: int, nonce: bytes) -> bytes:
    """The header of a new segment, with its CRC."""
    body = HEADER.pack(MAGIC, FORMAT_VERSION, seq, first_index, nonce, 0)[:-4]
    return body + struct.pack("<I", crc32c(body))


def encode_record(seed: int, offset: int, rtype: int, payload: bytes) -> bytes:
    """A record at ``offset`` of the segment whose header CRC is ``seed``."""
    n = len(payload)
    crc = _extend(_extend(seed, _CRC_CONTEXT.pack(offset, n, rtype)), payload)
    return RECORD.pack(crc, n, rtype) + payload


# -- decoding ----------------------------------------------------------------------------
def _read_header_v1(buf: bytes, path: str) -> tuple[int, int, int]:
    """(seq, first_index, crc seed) of a version-1 segment."""
    if len(buf) < HEADER.size:
        raise WALCorruptError(path, 0, "segment header is truncated")
    _, _, seq, first, _, crc = HEADER.unpack_from(buf)
    if crc32c(buf[: HEADER.size - 4]) != crc:
        raise WALCorruptError(path, 0, "segment header checksum mismatch")
    return seq, first, crc32c(buf[: HEADER.size])


_HEADER_READERS = {1: _read_header_v1}


def read_header(buf: bytes, path: str) -> tuple[int, int, int, int]:
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


def record_at(buf: bytes, pos: int, seed: int) -> tuple[int, int] | None:
    """(type, end) of a valid record starting at ``pos``, else None."""
    if pos + RECORD.size > len(buf):
        return None
    crc, n, rtype = RECORD.unpack_from(buf, pos)
    start = pos + RECORD.size
    end = start + n
    if rtype not in _REC_TYPES or end > len(buf):
        return None
    if _extend(_extend(seed, _CRC_CONTEXT.pack(pos, n, rtype)), buf[start:end]) != crc:
        return None
    return rtype, end


def valid_record_after(buf: bytes, pos: int, seed: int) -> int | None:
    """Offset of the first valid record starting after ``pos``, if any."""
    type_at = RECORD.size - 1
    for p in range(pos + 1, len(buf) - RECORD.size + 1):
        if buf[p + type_at] in _REC_TYPES and record_at(buf, p, seed) is not None:
            return p
    return None


class Replayer:
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
