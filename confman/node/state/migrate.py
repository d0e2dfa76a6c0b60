"""Migration of a schema-1 state database to schema 2, in place and in one transaction.

Schema 1 kept each value in ``entries`` and again as ``old_value``/``new_value`` in
``audit`` (and embedded in idempotency results). The migration rebuilds the history as
versions and events (docs/storage.md §10):

- every audit row becomes an event with the same id (``idx``, ``seq``) and, for
  configuration changes, a version (its new value; a tombstone for a delete);
- when a key's oldest retained row has an ``old_value`` whose version was compacted away,
  that value becomes a version of its own (a synthetic id ordered just before the row's
  log entry, so version order stays log order), so the event still renders its
  ``oldValue``;
- an entry whose current value has no retained audit row gets a synthetic version at its
  ``mod_index``;
- namespaces, idempotency rows (format-1 result blobs, still decoded), rejected entries,
  the history floor and the meta row are kept as they are; the retention policy starts
  at its defaults.

Format 1 did not record the type of a historic value; versions that are no longer
current take their key's current type (or ``string``). No API response renders the type of
a historic version. The transaction either commits a complete schema-2 database or rolls
back to the untouched schema-1 one; a database that does not look like schema 1 is refused
with ``SchemaError``. Afterwards the file is rebuilt once (``VACUUM``) to drop the freed
pages of the old tables and turn on incremental vacuum.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from confman.node.state.commands import timestamp_micros
from confman.node.state.schema import (
    ACTION_CODES,
    SCHEMA_VERSION,
    SEQ_BITS,
    SEQ_LIMIT,
    SchemaError,
    create_schema,
    event_id,
)

log = logging.getLogger(__name__)

_V1_COLUMNS = {
    "entries": [
        "namespace",
        "key",
        "value",
        "type",
        "version",
        "updated_at",
        "updated_by",
        "created_index",
        "mod_index",
    ],
    "audit": [
        "idx",
        "seq",
        "timestamp",
        "action",
        "actor",
        "namespace",
        "key",
        "old_value",
        "new_value",
        "version",
    ],
}
#: Synthetic version ids use the sequence numbers from here up (of the entry before the
#: one they precede); format-1 entries must have had fewer events.
_SYNTHETIC = SEQ_LIMIT // 2


def migrate_from_v1(conn: sqlite3.Connection) -> None:
    """Turn the schema-1 database ``conn`` has open into a schema-2 one (autocommit
    connection, no transaction open); SchemaError (nothing changed) if it cannot."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _check_v1(conn)
        conn.execute("ALTER TABLE entries RENAME TO entries_v1")
        conn.execute("ALTER TABLE audit RENAME TO audit_v1")
        conn.execute("ALTER TABLE history RENAME TO history_v1")
        conn.execute("DROP INDEX IF EXISTS audit_by_namespace")
        create_schema(conn)
        _Rebuild(conn).run()
        conn.execute(
            "UPDATE history SET compacted_through ="
            " (SELECT coalesce(max(compacted_through), 0) FROM history_v1)"
        )
        for table in ("entries_v1", "audit_v1", "history_v1"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("VACUUM")
    log.info("state database migrated from schema 1 to schema %d", SCHEMA_VERSION)


def _check_v1(conn: sqlite3.Connection) -> None:
    for table, expected in _V1_COLUMNS.items():
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        if columns != expected:
            raise SchemaError(
                f"cannot migrate the state database from schema 1: table {table} has columns"
                f" {columns}, expected {expected}"
            )
    big = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    if big is not None and big >= _SYNTHETIC:
        raise SchemaError(
            f"cannot migrate the state database from schema 1: a log entry has {big + 1}"
            f" audit rows (at most {_SYNTHETIC} are supported)"
        )


class _Rebuild:
    """One pass over the schema-1 rows, writing the schema-2 tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.synthetic: dict[int, int] = {}  # log index -> synthetic ids given out
        #: key id -> (vid, version, value) of its newest version, None once deleted
        self.current: dict[int, tuple[int, int, str] | None] = {}

    def run(self) -> None:
        conn = self.conn
        paths = sorted(
            {r[0] for r in conn.execute("SELECT path FROM namespaces")}
            | {r[0] for r in conn.execute("SELECT namespace FROM entries_v1")}
            | {r[0] for r in conn.execute("SELECT namespace FROM audit_v1")}
        )
        conn.executemany("INSERT INTO paths (path) VALUES (?)", [(p,) for p in paths])
        self.ns_ids = dict(conn.execute("SELECT path, ns_id FROM paths"))
        actors = sorted(
            {r[0] for r in conn.execute("SELECT actor FROM audit_v1")}
            | {r[0] for r in conn.execute("SELECT updated_by FROM entries_v1")}
        )
        conn.executemany("INSERT INTO actors (name) VALUES (?)", [(a,) for a in actors])
        self.actor_ids = dict(conn.execute("SELECT name, actor_id FROM actors"))
        keys = sorted(
            set(conn.execute("SELECT namespace, key FROM entries_v1"))
            | set(conn.execute("SELECT namespace, key FROM audit_v1 WHERE key IS NOT NULL"))
        )
        conn.executemany(
            "INSERT INTO entries (ns_id, key, vid) VALUES (?, ?, NULL)",
            [(self.ns_ids[ns], key) for ns, key in keys],
        )
        self.key_ids = {
            (ns, key): key_id
            for key_id, ns, key in conn.execute(
                "SELECT e.key_id, p.path, e.key FROM entries e JOIN paths p USING (ns_id)"
            )
        }
        self.types = {
            (ns, key): kind
            for ns, key, kind in conn.execute("SELECT namespace, key, type FROM entries_v1")
        }
        for row in conn.execute("SELECT * FROM audit_v1 ORDER BY idx, seq").fetchall():
            self._audit_row(*row)
        for row in conn.execute("SELECT * FROM entries_v1").fetchall():
            self._entry_row(*row)
        counts = [
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("audit_v1", "events", "entries_v1")
        ]
        live = conn.execute("SELECT count(*) FROM entries WHERE vid IS NOT NULL").fetchone()[0]
        if counts[0] != counts[1] or counts[2] != live:
            raise SchemaError(f"migration from schema 1 lost rows: {counts} (live {live})")

    def _synthetic_vid(self, index: int) -> int:
        """An id for a value that has no audit row of its own, ordered just before every
        event of log entry ``index``: from the top of entry ``index - 1``'s sequence space
        down (its real events stay below ``_SYNTHETIC``)."""
        n = self.synthetic.get(index, 0)
        self.synthetic[index] = n + 1
        return event_id(index - 1, SEQ_LIMIT - 1 - n)

    def _version(self, vid: int, key_id: int, version: int, value: str | None, *rest: Any) -> None:
        self.conn.execute(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (vid, key_id, version, value, *rest),
        )

    def _audit_row(
        self,
        idx: int,
        seq: int,
        timestamp: str,
        action: str,
        actor: str,
        namespace: str,
        key: str | None,
        old: str | None,
        new: str | None,
        version: int | None,
    ) -> None:
        eid, ts, actor_id = event_id(idx, seq), timestamp_micros(timestamp), self.actor_ids[actor]
        code = ACTION_CODES[action]
        ns_id = self.ns_ids[namespace]
        if key is None or version is None:
            self.conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, NULL, NULL, ?, ?)",
                (eid, code, ns_id, ts, actor_id),
            )
            return
        key_id = self.key_ids[(namespace, key)]
        kind = self.types.get((namespace, key), "string")
        prev = None
        if old is not None:
            replaced = version - 1 if action == "config.updated" else version
            cur = self.current.get(key_id)
            if cur is not None and cur[1] == replaced and cur[2] == old:
                prev = cur[0]
            else:  # compacted away: keep the old value as a version of its own
                prev = self._synthetic_vid(idx)
                self._version(prev, key_id, replaced, old, kind, ts, actor_id)
        if new is None:  # a delete: the tombstone carries the deleted version's number
            self._version(eid, key_id, version, None, None, ts, actor_id)
            self.current[key_id] = None
        else:
            self._version(eid, key_id, version, new, kind, ts, actor_id)
            self.current[key_id] = (eid, version, new)
        self.conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (eid, code, ns_id, key_id, prev, ts, actor_id),
        )

    def _entry_row(
        self,
        namespace: str,
        key: str,
        value: str,
        kind: str,
        version: int,
        updated_at: str,
        updated_by: str,
        created_index: int,
        mod_index: int,
    ) -> None:
        key_id = self.key_ids[(namespace, key)]
        ts, actor_id = timestamp_micros(updated_at), self.actor_ids[updated_by]
        cur = self.current.get(key_id)
        if cur is not None and (cur[0] >> SEQ_BITS, cur[1], cur[2]) == (mod_index, version, value):
            vid = cur[0]
            self.conn.execute(
                "UPDATE versions SET type = ?, ts_us = ?, actor_id = ? WHERE vid = ?",
                (kind, ts, actor_id, vid),
            )
        else:  # its audit row was compacted away
            vid = self._synthetic_vid(mod_index)
            self._version(vid, key_id, version, value, kind, ts, actor_id)
        self.conn.execute("UPDATE entries SET vid = ? WHERE key_id = ?", (vid, key_id))
