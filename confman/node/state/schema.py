"""The SQLite schema of the state database, its meta row, and rows in the API's shapes.

``history.compacted_through`` is the log index up to which audit rows (the change history
watches replay) have been deleted by ``CompactHistory``; tables added later are created
by ``create_schema`` when an older database is opened.

Tables with rows of user values (entries, audit, idempotency results) are rowid tables:
WITHOUT ROWID b-trees keep only ~1 KB of a row in the page and spill the rest into
overflow pages (measured: 1.6x the file size for 1 KB values).

Shared by the writer (``machine``), the readers (``queries``) and the snapshot files
(``confman.node.storage.snapshots``, which read index, term and membership from a copy).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from confman.raft.types import ConfState

#: Version of the database layout; a database of an unknown version is refused.
SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    created_index INTEGER NOT NULL,
    mod_index INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS audit (
    idx INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key TEXT,
    old_value TEXT,
    new_value TEXT,
    version INTEGER,
    PRIMARY KEY (idx, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_namespace ON audit (namespace, idx, seq);
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
    compacted_through INTEGER NOT NULL
);
"""

#: Every table with the columns that order it, for canonical dumps.
TABLE_ORDER: dict[str, str] = {
    "meta": "id",
    "namespaces": "path",
    "entries": "namespace, key",
    "audit": "idx, seq",
    "idempotency": "key",
    "rejected": "idx",
    "history": "id",
}

NAMESPACE_COLUMNS = "path, description, owner, created_at"
ENTRY_COLUMNS = "namespace, key, value, type, version, updated_at, updated_by"


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
    """Create missing tables and the meta row (index 0, no members) of a new database."""
    conn.executescript(SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta VALUES (0, ?, 0, 0, '[]', '[]')", (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO history VALUES (0, 0)")


def read_meta(conn: sqlite3.Connection) -> Meta:
    """The meta row; SchemaError if missing or of an unknown schema version."""
    try:
        row = conn.execute(
            "SELECT schema_version, applied_index, applied_term, voters, learners FROM meta"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"no readable meta table: {exc}") from exc
    if row is None:
        raise SchemaError("meta row missing")
    version, index, term, voters, learners = row
    if version != SCHEMA_VERSION:
        raise SchemaError(f"unknown state schema version {version} (known: {SCHEMA_VERSION})")
    return Meta(
        version, index, term, ConfState(tuple(json.loads(voters)), tuple(json.loads(learners)))
    )


def membership_json(conf: ConfState) -> tuple[str, str]:
    """Voters and learners as stored in the meta row."""
    return json.dumps(list(conf.voters)), json.dumps(list(conf.learners))


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
        "updatedAt": row[5],
        "updatedBy": row[6],
    }
