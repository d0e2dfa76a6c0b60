"""The write-ahead log: durable Raft entries, hard state and snapshot markers.

A WAL is a directory of segment files ``<seq>-<first index>.wal`` (16 digits each), written
strictly in sequence and read only when the WAL is opened. A segment is a header followed
by records; the first records of every segment restate the hard state and snapshot marker
current when it was created, so the oldest segments can be deleted once a snapshot covers
them (``release_to``).

The on-disk format (headers, records, CRCs, replay rules) is in ``wal_format``.

Damage at the tail of the last segment (a torn or partial record followed only by
garbage, i.e. no valid record after it) is cut off when the WAL is opened; damage
anywhere else raises ``WALCorruptError`` naming the file and byte offset.
"""

from __future__ import annotations

import itertools
import os
from array import array
from collections.abc import Callable, Sequence
from types import TracebackType

from confman.node.codec import (
    CodecError,
    decode_entries,
    decode_hard_state,
    encode_entries,
    encode_hard_state,
)
from confman.node.storage.files import AppendFile, FileSystem, OSFileSystem
from confman.node.storage.wal_format import (
    DEFAULT_SEGMENT_BYTES,
    FORMAT_VERSION,
    HEADER,
    MARKER,
    PREAMBLE_RECORDS,
    PREAMBLE_TYPES,
    REC_ENTRIES,
    REC_HARD_STATE,
    REC_SNAPSHOT_MARKER,
    RECORD,
    SEGMENT_NAME,
    TMP_SUFFIX,
    Replayer,
    Segment,
    WALCorruptError,
    WALError,
    WalState,
    WALVersionError,
    crc32c,
    encode_record,
    read_header,
    record_at,
    segment_header,
    segment_name,
    valid_record_after,
)
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


# -- the WAL -----------------------------------------------------------------------------
class WAL:
    """A segmented, append-only write-ahead log (single writer; no asyncio)."""

    def __init__(self, directory: str, fs: FileSystem, segment_bytes: int) -> None:
        """Use ``WAL.open``."""
        self.dir = directory
        self._fs = fs
        self._segment_bytes = segment_bytes
        self._segments: list[Segment] = []
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
        stale = [n for n in names if n.endswith(TMP_SUFFIX)]
        for n in stale:  # a segment whose creation did not complete
            fs.remove(self._path(n))
        if stale:
            fs.sync_dir(self.dir)
        segs = sorted(
            (Segment(int(m[1]), int(m[2]), n) for n in names if (m := SEGMENT_NAME.match(n))),
            key=lambda s: s.seq,
        )
        for a, b in itertools.pairwise(segs):
            if b.seq != a.seq + 1:
                raise WALCorruptError(self._path(b.name), 0, f"segment {a.seq + 1} is missing")
        if not segs:
            self._recovered = WalState()
            self._create_segment(1, 1)
            return
        rep = Replayer()
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

    def _replay_segment(self, seg: Segment, rep: Replayer, last: bool) -> int:
        """Apply one segment's records; returns the length of its valid part."""
        path = self._path(seg.name)
        buf = self._fs.read(path)
        _, seq, first, seed = read_header(buf, path)
        if (seq, first) != (seg.seq, seg.first_index):
            raise WALCorruptError(path, 0, f"header says segment {seq}-{first}")
        self._seed = seed
        carried = rep.carried() if rep.segment_end is not None else None
        pos = HEADER.size
        n = 0
        while pos < len(buf):
            rec = record_at(buf, pos, seed)
            if rec is None:
                if n < PREAMBLE_RECORDS:
                    raise WALCorruptError(path, pos, "segment preamble is damaged")
                self._damaged(path, buf, pos, seed, last)
                break
            rtype, end = rec
            if n < PREAMBLE_RECORDS and rtype != PREAMBLE_TYPES[n]:
                raise WALCorruptError(path, pos, "segment does not start with its preamble")
            self._apply(rep, path, pos, rtype, buf[pos + RECORD.size : end])
            n += 1
            pos = end
            if n == PREAMBLE_RECORDS and carried is not None:
                rep.check_continues(carried, first, path)
        if n < PREAMBLE_RECORDS:
            raise WALCorruptError(path, pos, "segment preamble is missing")
        rep.segment_end = (path, pos)
        return pos

    @staticmethod
    def _apply(rep: Replayer, path: str, pos: int, rtype: int, payload: bytes) -> None:
        where = (path, pos)
        try:
            if rtype == REC_ENTRIES:
                batch = decode_entries(payload)
                if batch:
                    rep.entries(batch, where)
            elif rtype == REC_HARD_STATE:
                rep.state.hard_state = decode_hard_state(payload)
            else:
                if len(payload) != MARKER.size:
                    raise WALCorruptError(path, pos, "malformed snapshot marker")
                index, term = MARKER.unpack(payload)
                rep.marker(index, term, where)
        except CodecError as e:
            raise WALCorruptError(path, pos, f"undecodable record: {e}") from e

    def _damaged(self, path: str, buf: bytes, pos: int, seed: int, last: bool) -> None:
        """Cut a torn tail off the last segment, or raise for damage elsewhere."""
        if not last:
            raise WALCorruptError(path, pos, "invalid record in a sealed segment")
        later = valid_record_after(buf, pos, seed)
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
        self._write(self._rec(REC_SNAPSHOT_MARKER, MARKER.pack(index, term), 0), True)
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
        return encode_record(self._seed, self._size + delta, rtype, payload)

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
        tmp = self._path(name + TMP_SUFFIX)
        header = segment_header(seq, first_index, os.urandom(8))
        seed = crc32c(header)
        pos = len(header)
        hs = encode_record(seed, pos, REC_HARD_STATE, encode_hard_state(self._hard_state))
        mark = MARKER.pack(self._snap_index, self._snap_term)
        marker = encode_record(seed, pos + len(hs), REC_SNAPSHOT_MARKER, mark)
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
        self._segments.append(Segment(seq, first_index, name))
