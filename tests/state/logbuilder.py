"""Building Raft logs of encoded requests for state-machine tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confman.node.state.commands import (
    DEFAULT_IDEMPOTENCY_TTL_S,
    Batch,
    Command,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
    Request,
    encode_request,
    format_timestamp,
)
from confman.node.state.machine import ApplyResult, StateMachine
from confman.node.state.schema import ACTIONS, micros_timestamp
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
    for suffix in ("", "-wal", "-shm"):  # asked twice for one index: start afresh
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with StateMachine(path) as machine:
        machine.apply(log.entries[:index], log.conf_states)
        return machine.state_digest()


#: The events as schema-1 audit rows: idx, seq, timestamp, action, actor, namespace, key,
#: old value, new value, version (tests compare history in that shape).
_AUDIT_ROWS = (
    "SELECT ev.eid >> 20, ev.eid & 1048575, ev.ts_us, ev.action, a.name, p.path, e.key,"
    " pv.value, nv.value, nv.version FROM events ev JOIN paths p ON p.ns_id = ev.ns_id"
    " JOIN actors a ON a.actor_id = ev.actor_id LEFT JOIN entries e ON e.key_id = ev.key_id"
    " LEFT JOIN versions nv ON nv.vid = ev.eid AND ev.key_id IS NOT NULL"
    " LEFT JOIN versions pv ON pv.vid = ev.prev_vid ORDER BY ev.eid"
)


def audit_rows(machine: StateMachine) -> list[tuple[object, ...]]:
    return [
        (r[0], r[1], micros_timestamp(r[2]), ACTIONS[r[3]], *r[4:])
        for r in machine.conn.execute(_AUDIT_ROWS)
    ]


def entry_rows(machine: StateMachine) -> list[tuple[object, ...]]:
    """The current entries as schema-1 rows: namespace, key, value, type, version, updated
    at and by, created index (None once its version is compacted away), mod index."""
    rows = machine.conn.execute(
        "SELECT p.path, e.key, v.value, v.type, v.version, v.ts_us, a.name,"
        " (SELECT max(c.vid) >> 20 FROM versions c WHERE c.key_id = e.key_id AND c.version = 1"
        " AND c.value IS NOT NULL AND c.vid <= e.vid), e.vid >> 20"
        " FROM entries e JOIN paths p ON p.ns_id = e.ns_id JOIN versions v ON v.vid = e.vid"
        " JOIN actors a ON a.actor_id = v.actor_id ORDER BY p.path, e.key"
    )
    return [(*r[:5], micros_timestamp(r[5]), *r[6:]) for r in rows]


def statuses(results: Sequence[ApplyResult]) -> list[str]:
    return [r.status.value for r in results]


def workload(seed: int, count: int) -> Log:
    """A seeded mixed log: namespaces, puts, CAS, deletes, batches, retries, no-ops, junk."""
    rng = random.Random(seed)
    log = Log()
    log.conf(ConfState(("n1", "n2", "n3")))
    namespaces = ["app", "app/web", "db", "ops"]
    for ns in namespaces:
        log.add(PutNamespace(ns, f"{ns} settings", "ops"))
    retried: dict[str, Command] = {}
    for i in range(count):
        ns = rng.choice(namespaces)
        key = f"k{rng.randrange(12)}"
        roll = rng.random()
        at = i * 0.25
        if roll < 0.55:
            log.add(PutConfig(ns, key, f"v{i}-" + "x" * rng.randrange(50)), actor="bot", at=at)
        elif roll < 0.65:
            log.add(PutConfig(ns, key, f"cas{i}", expected_version=rng.randrange(1, 4)), at=at)
        elif roll < 0.75:
            log.add(DeleteConfig(ns, key), at=at)
        elif roll < 0.82:
            members = (PutConfig(ns, key, f"b{i}"), DeleteConfig(ns, f"k{rng.randrange(12)}"))
            log.add(Batch(members), actor="batcher", at=at)
        elif roll < 0.90:
            idem = f"idem-{rng.randrange(6)}"
            cmd = retried.setdefault(idem, PutConfig(ns, key, "retried"))
            log.add(cmd, key=idem, ttl=30, at=at)
        elif roll < 0.92:
            log.add(DeleteNamespace(rng.choice(namespaces)), actor="admin", at=at)
        elif roll < 0.96:
            log.add(PutNamespace(rng.choice(namespaces)), actor="admin", at=at)
        elif roll < 0.98:
            log.noop()
        else:
            log.raw(b"\xc1 not a command")
    return log
