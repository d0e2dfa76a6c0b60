"""Test helpers: an independent reference model of WAL replay, and a segment record walker."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from confman.node.storage.wal import WalState
from confman.raft.types import Entry, HardState

HEADER_SIZE = 40  # documented in confman.node.storage.wal_format
_RECORD = struct.Struct("<IIB")

State = tuple[HardState, int, int, tuple[Entry, ...]]


@dataclass
class LogModel:
    """What replay must return after a sequence of writes (written for clarity, not speed)."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: tuple[int, int] = (0, 0)
    log: list[Entry] = field(default_factory=list)  # entries after the snapshot

    def save(self, hs: HardState | None, entries: list[Entry]) -> None:
        if entries:
            start = entries[0].index
            self.log = [e for e in self.log if e.index < start] + list(entries)
        if hs is not None:
            self.hard_state = hs

    def marker(self, index: int, term: int) -> None:
        terms = {e.index: e.term for e in self.log}
        if terms.get(index) == term:
            self.log = [e for e in self.log if e.index > index]
        else:
            self.log = []
        self.snapshot = (index, term)

    @property
    def last_index(self) -> int:
        return self.log[-1].index if self.log else self.snapshot[0]

    def term_at(self, index: int) -> int:
        if index == self.snapshot[0]:
            return self.snapshot[1]
        return next(e.term for e in self.log if e.index == index)

    def state(self) -> State:
        return (self.hard_state, *self.snapshot, tuple(self.log))

    def copy(self) -> LogModel:
        return LogModel(self.hard_state, self.snapshot, list(self.log))


def as_tuple(st: WalState) -> State:
    return (st.hard_state, st.snapshot_index, st.snapshot_term, tuple(st.entries))


def record_spans(segment: bytes) -> list[tuple[int, int]]:
    """(start, end) of every record of an undamaged segment, following the documented format."""
    spans = []
    pos = HEADER_SIZE
    while pos < len(segment):
        _, n, _ = _RECORD.unpack_from(segment, pos)
        spans.append((pos, pos + _RECORD.size + n))
        pos += _RECORD.size + n
    assert pos == len(segment)
    return spans
