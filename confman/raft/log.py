"""The core's view of the log: persisted entries (``LogStorage``) plus an unstable tail.

Entries the core has accepted but the runtime has not yet persisted live in ``Unstable``;
they shadow any stale entries at the same indices in storage until they are persisted.
"""

from __future__ import annotations

from confman.raft.storage import LogStorage
from confman.raft.types import CompactedError, Entry, Snapshot, UnavailableError


class Unstable:
    """Entries (and possibly a snapshot) not yet persisted by the runtime."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset  # index of entries[0]

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to ``i`` (with term ``t``) were persisted."""
        if i < self.offset:
            return
        if self.maybe_term(i) == t:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable tail (stale storage entries are shadowed).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)


class RaftLog:
    """Persisted log + unstable tail, with the commit and applied indices."""

    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1

    # -- indices and terms --------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """Term of entry ``i``; 0 when ``i`` is outside the log (compacted or beyond)."""
        dummy = self.first_index() - 1
        if i < dummy or i > self.last_index():
            return 0
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        try:
            return self.storage.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def matches(self, i: int, t: int) -> bool:
        return self.term(i) == t

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: is a log ending at (last_index, last_term) at least as up to date?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def stable_last_index(self) -> int:
        """Highest index known to be persisted and still part of this log."""
        if self.unstable.snapshot is not None:
            return 0
        if self.unstable.entries:
            return self.unstable.offset - 1
        return self.last_index()

    # -- reading entries ----------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi); raises ``CompactedError`` when lo is compacted."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice [{lo},{hi}) beyond last index {self.last_index()}")
        ents: list[Entry] = []
        u = self.unstable
        if lo < u.offset:
            ents = self.storage.entries(lo, min(hi, u.offset), max_bytes)
            if len(ents) < min(hi, u.offset) - lo:
                return ents  # limited by size
        if hi > u.offset:
            start = max(lo, u.offset)
            more = u.entries[start - u.offset : hi - u.offset]
            if max_bytes is not None and ents:
                size = sum(len(e.data) + 16 for e in ents)
                kept = []
                for e in more:
                    size += len(e.data) + 16
                    if size > max_bytes:
                        break
                    kept.append(e)
                more = kept
            ents = [*ents, *more] if ents else list(more)
            if max_bytes is not None and not ents and more:
                ents = more[:1]
        return ents

    def entries_from(self, i: int, max_bytes: int | None = None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_bytes)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def has_next_committed(self) -> bool:
        lo = max(self.applied + 1, self.first_index())
        return self.committed + 1 > lo

    def next_committed(self, max_bytes: int | None = None) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1, max_bytes)
        return []

    # -- changing the log ---------------------------------------------------------------
    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"append after {after} is below committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: list[Entry]) -> int:
        """Index of the first entry whose term differs from ours (or is new); 0 if none."""
        for e in ents:
            if not self.matches(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest index <= ``index`` whose term is <= ``term`` (fast back-off hint)."""
        first = self.first_index()
        while index >= first:
            t = self.term(index)
            if t <= term:
                return index
            index -= 1
        return index if index >= 0 else 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        """Append ``ents`` after (index, log_term) if it matches; returns the last new index.

        Only a conflicting suffix is replaced: a stale, reordered append must not cut off
        entries after it that this node already acknowledged.
        """
        if not self.matches(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(
                    f"entry {ci} conflicts with committed entry (committed {self.committed})"
                )
            self.append(ents[ci - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, to: int) -> None:
        if to > self.committed:
            if to > self.last_index():
                raise AssertionError(f"commit {to} beyond last index {self.last_index()}")
            self.committed = to

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` if that entry is of ``term`` (§5.4.2)."""
        if max_index > self.committed and self.term(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def applied_to(self, i: int) -> None:
        if i > self.applied:
            self.applied = i
