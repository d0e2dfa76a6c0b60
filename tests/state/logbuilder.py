"""Building Raft logs of encoded requests for state-machine tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confman.node.state.commands import (
    DEFAULT_IDEMPOTENCY_TTL_S,
    Command,
    Request,
    encode_request,
    format_timestamp,
)
from confman.node.state.machine import ApplyResult, StateMachine
from confman.raft.types import ConfState, Entry, EntryType

T0 = datetime(2026, 2, 13, 10, 0, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    """The command timestamp ``seconds`` after T0."""
    return format_timestamp(T0 + timedelta(seconds=seconds))


class Log:
    """A growing log: each ``add`` appends the next entry (one millisecond apart)."""

    def __init__(self, term: int = 1) -> None:
        self.term = term
        self.entries: list[Entry] = []
        self.conf_states: dict[int, ConfState] = {}

    @property
    def next_index(self) -> int:
        return len(self.entries) + 1

    def _append(self, etype: EntryType, data: bytes) -> Entry:
        entry = Entry(self.term, self.next_index, etype, data)
        self.entries.append(entry)
        return entry

    def add(
        self,
        command: Command,
        *,
        actor: str = "alice",
        at: float | None = None,
        key: str | None = None,
        ttl: int = DEFAULT_IDEMPOTENCY_TTL_S,
    ) -> Entry:
        """Append a request; ``at`` is seconds after T0 (default: index milliseconds)."""
        when = ts(self.next_index / 1000 if at is None else at)
        return self._append(
            EntryType.NORMAL, encode_request(Request(command, actor, when, key, ttl))
        )

    def noop(self) -> Entry:
        return self._append(EntryType.NORMAL, b"")

    def raw(self, data: bytes) -> Entry:
        return self._append(EntryType.NORMAL, data)

    def conf(self, conf_state: ConfState) -> Entry:
        entry = self._append(EntryType.CONF_CHANGE, b"conf change")
        self.conf_states[entry.index] = conf_state
        return entry


def replay(machine: StateMachine, log: Log, chunk: int = 7) -> list[ApplyResult]:
    """What the runtime does on start: apply only the entries after the applied index."""
    results: list[ApplyResult] = []
    pending = log.entries[machine.applied_index :]
    for lo in range(0, len(pending), chunk):
        results += machine.apply(pending[lo : lo + chunk], log.conf_states)
    return results


def digest_at(tmp: Path, log: Log, index: int) -> str:
    """Digest of a fresh machine that applied ``log`` up to ``index`` in one batch."""
    path = tmp / f"ref-{index}.db"
    with StateMachine(path) as machine:
        machine.apply(log.entries[:index], log.conf_states)
        return machine.state_digest()


def audit_rows(machine: StateMachine) -> list[tuple[object, ...]]:
    return machine.conn.execute("SELECT * FROM audit ORDER BY idx, seq").fetchall()


def entry_rows(machine: StateMachine) -> list[tuple[object, ...]]:
    return machine.conn.execute("SELECT * FROM entries ORDER BY namespace, key").fetchall()


def statuses(results: Sequence[ApplyResult]) -> list[str]:
    return [r.status.value for r in results]
