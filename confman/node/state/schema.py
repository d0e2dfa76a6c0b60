"""The SQLite schema of the state database (format 2), its meta row, and rows in the API's
shapes.

Every value is stored once, in ``versions``: ``entries`` points at a key's current version,
``events`` (the change history audit and watches replay) refer to versions by id, and
idempotency results refer to versions too (see ``machine_results``). A version id and an
event id are ``(log index << SEQ_BITS) | seq``, ``seq`` counting the events of one entry, so
rowid order is log order. Timestamps are microseconds and actors and namespace paths small
integers (``actors``, ``paths``: dictionaries whose rows are never deleted). Layout and
rationale: docs/storage.md §3.

``history.compacted_through`` is the log index up to which events may have been deleted
(the floor below which watches answer 410); the rest of the ``history`` row is the
replicated retention policy (``retention``).

All tables with user values are rowid tables: WITHOUT ROWID b-trees keep only ~1 KB of a
row in the page and spill the rest into overflow pages (measured: 1.6x the file size).

Shared by the writer (``machine``), the readers (``queries``), the migration from format 1
(``migrate``) and the snapshot files (``confman.node.storage.snapshots``, which read index,
term and membership from a copy).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from confman.node.state.commands import format_timestamp
from confman.raft.types import ConfState

#: Version of the database layout written by this release. A database of version 1 is
#: migrated when the state machine opens it (``migrate``); other versions are refused.
SCHEMA_VERSION = 2
#: Versions whose meta row ``read_meta`` reads (the meta table is the same in both).
KNOWN_VERSIONS = (1, 2)

#: Bits of a version/event id below the log index: 1,048,575 events per log entry.
SEQ_BITS = 20
SEQ_LIMIT = 1 << SEQ_BITS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    schema_version INTEGER NOT NULL,
    applied_index INTEGER NOT NULL,
    applied_term INTEGER NOT NULL,
    voters TEXT NOT NULL,
    learners TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS namespaces (
    path TEXT PRIMARY KEY,
    description TEXT,
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS paths (
    ns_id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS actors (
    actor_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS entries (
    key_id INTEGER PRIMARY KEY,
    ns_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    vid INTEGER,
    UNIQUE (ns_id, key)
);
CREATE TABLE IF NOT EXISTS versions (
    vid INTEGER PRIMARY KEY,
    key_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    value TEXT,
    type TEXT,
    ts_us INTEGER NOT NULL,
    actor_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_key ON versions (key_id, vid);
CREATE TABLE IF NOT EXISTS events (
    eid INTEGER PRIMARY KEY,
    action INTEGER NOT NULL,
    ns_id INTEGER NOT NULL,
    key_id INTEGER,
    prev_vid INTEGER,
    ts_us INTEGER NOT NULL,
    actor_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_ns ON events (ns_id, eid);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    result BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency (expires_at);
CREATE TABLE IF NOT EXISTS rejected (
    idx INTEGER PRIMARY KEY,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    compacted_through INTEGER NOT NULL,
    keep_versions INTEGER NOT NULL,
    keep_age_s INTEGER NOT NULL,
    prune_budget INTEGER NOT NULL
);
"""

#: The retention policy a new (or migrated) database starts with: history is pruned only
#: beyond the newest ``keep_versions`` versions of a key **and** older than ``keep_age_s``,
#: at most about ``prune_budget`` rows per log entry (``retention``).
DEFAULT_KEEP_VERSIONS = 100
DEFAULT_KEEP_AGE_S = 7 * 24 * 3600
DEFAULT_PRUNE_BUDGET = 1000

#: Every table with the columns that order it, for canonical dumps (and logical copies:
#: inserting every table's rows in this order into a ``create_schema`` database gives a
#: valid state database).
TABLE_ORDER: dict[str, str] = {
    "meta": "id",
    "namespaces": "path",
    "paths": "ns_id",
    "actors": "actor_id",
    "entries": "key_id",
    "versions": "vid",
    "events": "eid",
    "idempotency": "key",
    "rejected": "idx",
    "history": "id",
}

#: ``events.action`` codes and the API's names for them.
ACTIONS: tuple[str, ...] = (
    "",
    "config.created",
    "config.updated",
    "config.deleted",
    "namespace.created",
    "namespace.updated",
    "namespace.deleted",
)
ACTION_CODES: dict[str, int] = {name: code for code, name in enumerate(ACTIONS) if name}

NAMESPACE_COLUMNS = "path, description, owner, created_at"
#: A version as the API's ConfigEntry: select from ``versions v`` joined by ``ENTRY_JOIN``.
ENTRY_COLUMNS = "p.path, e.key, v.value, v.type, v.version, v.ts_us, a.name"
ENTRY_JOIN = (
    "JOIN entries e ON e.key_id = v.key_id JOIN paths p ON p.ns_id = e.ns_id"
    " JOIN actors a ON a.actor_id = v.actor_id"
)
#: The current entries: ``FROM CURRENT_ENTRIES`` with ``ENTRY_COLUMNS``.
CURRENT_ENTRIES = (
    "entries e JOIN paths p ON p.ns_id = e.ns_id JOIN versions v ON v.vid = e.vid"
    " JOIN actors a ON a.actor_id = v.actor_id"
)


class SchemaError(RuntimeError):
    """The database is not a Confman state database this release understands."""


@dataclass(frozen=True, slots=True)
class Meta:
    """The meta row: what has been applied and the membership at that point."""

    schema_version: int
    applied_index: int
    applied_term: int
    conf_state: ConfState


def create_schema(conn: sqlite3.Connection) -> None:
    """Create missing tables, indexes and the meta row (index 0, no members) of a new
    database. Statement by statement (not ``executescript``, which would commit an open
    transaction), so it also runs inside the migration's transaction."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO meta VALUES (0, ?, 0, 0, '[]', '[]')", (SCHEMA_VERSION,))
    conn.execute(
        "INSERT OR IGNORE INTO history VALUES (0, 0, ?, ?, ?)",
        (DEFAULT_KEEP_VERSIONS, DEFAULT_KEEP_AGE_S, DEFAULT_PRUNE_BUDGET),
    )


def stored_schema_version(conn: sqlite3.Connection) -> int | None:
    """The meta row's schema version; None for an empty database (no meta table)."""
    try:
        row = conn.execute("SELECT schema_version FROM meta").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise SchemaError(f"no readable meta table: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"no readable meta table: {exc}") from exc
    if row is None:
        raise SchemaError("meta row missing")
    return int(row[0])


def read_meta(conn: sqlite3.Connection) -> Meta:
    """The meta row; SchemaError if missing or of an unknown schema version (a version-1
    row is read: its layout is the same, and ``Meta.schema_version`` says which it is)."""
    try:
        row = conn.execute(
            "SELECT schema_version, applied_index, applied_term, voters, learners FROM meta"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"no readable meta table: {exc}") from exc
    if row is None:
        raise SchemaError("meta row missing")
    version, index, term, voters, learners = row
    if version not in KNOWN_VERSIONS:
        known = ", ".join(map(str, KNOWN_VERSIONS))
        raise SchemaError(f"unknown state schema version {version} (known: {known})")
    return Meta(
        version, index, term, ConfState(tuple(json.loads(voters)), tuple(json.loads(learners)))
    )


def membership_json(conf: ConfState) -> tuple[str, str]:
    """Voters and learners as stored in the meta row."""
    return json.dumps(list(conf.voters)), json.dumps(list(conf.learners))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=4096)
def micros_timestamp(micros: int) -> str:
    """The command timestamp (RFC 3339, microseconds) of ``micros`` since the epoch: the
    inverse of ``commands.timestamp_micros``."""
    return format_timestamp(_EPOCH + timedelta(microseconds=micros))


def event_id(index: int, seq: int) -> int:
    """The id of the ``seq``-th event (and of its version) of log entry ``index``."""
    return (index << SEQ_BITS) | seq


def first_event_after(index: int) -> int:
    """The smallest event id of a log entry after ``index``."""
    return (index + 1) << SEQ_BITS


def namespace_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ``NAMESPACE_COLUMNS`` as the API's Namespace."""
    return {"path": row[0], "description": row[1], "owner": row[2], "createdAt": row[3]}


def entry_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ``ENTRY_COLUMNS`` as the API's ConfigEntry."""
    return {
        "namespace": row[0],
        "key": row[1],
        "value": row[2],
        "type": row[3],
        "version": row[4],
        "updatedAt": micros_timestamp(row[5]),
        "updatedBy": row[6],
    }
