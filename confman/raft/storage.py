"""The stable-log interface the core reads from, and an in-memory implementation.

The runtime keeps the durable log in its WAL and mirrors it into a ``MemoryStorage``
(replayed from the WAL on start), exactly as etcd does: the core only ever reads
through this interface, and only entries the runtime has already persisted are here.
"""

from __future__ import annotations

from typing import Protocol

from confman.raft.types import (
    EMPTY_SNAPSHOT,
    CompactedError,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
    SnapshotOutOfDateError,
    UnavailableError,
)


class LogStorage(Protocol):
    """Read access to the persisted log, hard state and latest snapshot."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi); at least one if any, then up to ``max_bytes`` of data."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index`` (valid from first_index()-1 to last_index())."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class MemoryStorage:
    """An in-memory ``LogStorage``; the runtime appends to it after persisting.

    ``_ents[0]`` is a sentinel holding the index and term of the last compacted entry
    (the snapshot point), so ``term(first_index() - 1)`` is always answerable.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        """``conf_state`` bootstraps a brand-new cluster's membership."""
        self.hard_state = HardState()
        self._snapshot = (
            EMPTY_SNAPSHOT if conf_state is None else Snapshot(SnapshotMeta(0, 0, conf_state))
        )
        self._ents: list[Entry] = [Entry(term=0, index=0)]
        #: Membership to start the core with when it differs from the snapshot's (the
        #: runtime sets it to the state machine's membership at its applied index).
        self.conf_state: ConfState | None = None

    # -- LogStorage -------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        conf = self.conf_state if self.conf_state is not None else self._snapshot.meta.conf_state
        return self.hard_state, conf

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        ents = self._ents[lo - offset : hi - offset]
        if max_bytes is None or len(ents) <= 1:
            return ents
        size = 0
        for i, e in enumerate(ents):
            size += len(e.data) + 16
            if size > max_bytes and i > 0:
                return ents[:i]
        return ents

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first is {offset + 1})")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} is beyond last {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- mutation by the runtime ------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def append(self, entries: list[Entry]) -> None:
        """Append entries, replacing any conflicting suffix (entries must be contiguous)."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already compacted
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(
                f"missing log entry: last {self.last_index()}, appending at {entries[0].index}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with a snapshot (follower installing a leader's snapshot)."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.meta.index} is not newer than {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.meta.term, index=snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of applied state at ``index`` (the log is left for ``compact``)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.meta.index}"
            )
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} is beyond last {self.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including ``compact_index``."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"index {compact_index} already compacted")
        if compact_index > self.last_index():
            raise UnavailableError(f"compact {compact_index} is beyond last {self.last_index()}")
        i = compact_index - offset
        sentinel = Entry(term=self._ents[i].term, index=self._ents[i].index)
        self._ents = [sentinel, *self._ents[i + 1 :]]
