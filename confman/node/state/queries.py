"""Reads of the applied state for the HTTP layer, on a read-only SQLite connection.

In WAL mode readers never block the writer nor wait for it. A ``Reader`` holds one
connection: use one per thread. Results are plain dicts in the API's camelCase shapes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confman.node.state.commands import timestamp_micros
from confman.node.state.schema import (
    ACTIONS,
    CURRENT_ENTRIES,
    ENTRY_COLUMNS,
    NAMESPACE_COLUMNS,
    SEQ_BITS,
    entry_dict,
    first_event_after,
    micros_timestamp,
    namespace_dict,
)

AUDIT_LIMIT_MAX = 1000
#: An event with its namespace, key, new version (value, version) and replaced version.
_EVENTS = (
    "events ev JOIN paths p ON p.ns_id = ev.ns_id LEFT JOIN entries e ON e.key_id = ev.key_id"
    " LEFT JOIN versions nv ON nv.vid = ev.eid AND ev.key_id IS NOT NULL"
    " LEFT JOIN versions pv ON pv.vid = ev.prev_vid"
)
_CHANGE_COLUMNS = "ev.eid, ev.action, p.path, e.key, nv.value, nv.version"
#: One current entry by (ns_id, key), its actor as an id (``Reader._point_entry``).
_POINT_COLUMNS = "e.key, v.value, v.type, v.version, v.ts_us, v.actor_id"
_POINT_JOIN = "entries e JOIN versions v ON v.vid = e.vid"


def _grant_clause(grants: Iterable[str], column: str) -> tuple[str, list[str]] | None:
    """SQL condition on ``column`` for namespace grants; None when all are visible.

    A grant ``team`` covers ``team`` and ``team/...`` (a key range, so the primary key
    index serves it and ``_``/``%`` in names are not wildcards).
    """
    parts: list[str] = []
    params: list[str] = []
    for grant in sorted(set(grants)):
        if grant == "*":
            return None
        parts.append(f"{column} = ? OR ({column} >= ? AND {column} < ?)")
        params += [grant, grant + "/", grant + "0"]  # "0" follows "/" in code point order
    if not parts:
        return "0", []
    return " OR ".join(f"({p})" for p in parts), params


class Reader:
    """Read-only queries over the state database at ``db_path``."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        uri = Path(db_path).resolve().as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        # Rows of ``paths`` and ``actors`` are never changed nor deleted, so what this
        # connection has read of them stays true (point reads skip two joins).
        self._ns_ids: dict[str, int] = {}
        self._actor_names: dict[int, str] = {}

    def _ns_id(self, path: str) -> int | None:
        ns_id = self._ns_ids.get(path)
        if ns_id is None:
            row = self._conn.execute("SELECT ns_id FROM paths WHERE path = ?", (path,))
            found = row.fetchone()
            if found is None:
                return None
            ns_id = self._ns_ids[path] = int(found[0])
        return ns_id

    def _point_entry(self, namespace: str, row: tuple[Any, ...]) -> dict[str, Any]:
        """A row of ``_POINT_COLUMNS`` as the API's ConfigEntry."""
        actor = self._actor_names.get(row[5])
        if actor is None:
            found = self._conn.execute("SELECT name FROM actors WHERE actor_id = ?", (row[5],))
            actor = self._actor_names[row[5]] = found.fetchone()[0]
        return entry_dict((namespace, row[0], row[1], row[2], row[3], row[4], actor))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def consistent(self) -> Iterator[Reader]:
        """Run several queries against one snapshot of the state (one read transaction)."""
        if self._conn.in_transaction:  # nested: the outer snapshot already holds
            yield self
            return
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    def applied_index(self) -> int:
        """Index of the last entry applied to the state being read."""
        index: int = self._conn.execute("SELECT applied_index FROM meta").fetchone()[0]
        return index

    # -- namespaces ---------------------------------------------------------------------
    def get_namespace(self, path: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            f"SELECT {NAMESPACE_COLUMNS} FROM namespaces WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else namespace_dict(row)

    def list_namespaces(self, grants: Iterable[str] = ("*",)) -> list[dict[str, Any]]:
        """Namespaces visible under ``grants``, sorted by path."""
        clause = _grant_clause(grants, "path")
        where, params = ("", []) if clause is None else (f" WHERE {clause[0]}", clause[1])
        rows = self._conn.execute(
            f"SELECT {NAMESPACE_COLUMNS} FROM namespaces{where} ORDER BY path", params
        )
        return [namespace_dict(r) for r in rows]

    # -- entries ------------------------------------------------------------------------
    def get_entry(self, namespace: str, key: str) -> dict[str, Any] | None:
        ns_id = self._ns_id(namespace)
        if ns_id is None:
            return None
        row = self._conn.execute(
            f"SELECT {_POINT_COLUMNS} FROM {_POINT_JOIN} WHERE e.ns_id = ? AND e.key = ?",
            (ns_id, key),
        ).fetchone()
        return None if row is None else self._point_entry(namespace, row)

    def get_entry_and_index(self, namespace: str, key: str) -> tuple[dict[str, Any], int] | None:
        """An existing entry and the applied index of the state it was read from, in one
        statement (one implicit read transaction); None when the entry does not exist."""
        ns_id = self._ns_id(namespace)
        if ns_id is None:
            return None
        row = self._conn.execute(
            f"SELECT {_POINT_COLUMNS}, (SELECT applied_index FROM meta) FROM {_POINT_JOIN}"
            " WHERE e.ns_id = ? AND e.key = ?",
            (ns_id, key),
        ).fetchone()
        return None if row is None else (self._point_entry(namespace, row[:-1]), row[-1])

    def list_entries(self, namespace: str) -> list[dict[str, Any]]:
        """Entries of one namespace, sorted by key."""
        rows = self._conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM {CURRENT_ENTRIES} WHERE p.path = ? ORDER BY e.key",
            (namespace,),
        )
        return [entry_dict(r) for r in rows]

    def list_all_entries(self, grants: Iterable[str] = ("*",)) -> list[dict[str, Any]]:
        """Every entry in a namespace visible under ``grants``, sorted by namespace, key."""
        clause = _grant_clause(grants, "p.path")
        where, params = ("", []) if clause is None else (f" WHERE {clause[0]}", clause[1])
        rows = self._conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM {CURRENT_ENTRIES}{where} ORDER BY p.path, e.key",
            params,
        )
        return [entry_dict(r) for r in rows]

    # -- history ------------------------------------------------------------------------
    def audit(self, namespace: str, limit: int = 50) -> list[dict[str, Any]]:
        """Audit events of a namespace, newest first; ``limit`` clamped to 1..1000."""
        limit = max(1, min(AUDIT_LIMIT_MAX, int(limit)))
        rows = self._conn.execute(
            "SELECT ev.ts_us, ev.action, a.name, p.path, e.key, pv.value, nv.value"
            f" FROM {_EVENTS} JOIN actors a ON a.actor_id = ev.actor_id"
            " WHERE ev.ns_id = (SELECT ns_id FROM paths WHERE path = ?)"
            " ORDER BY ev.ns_id DESC, ev.eid DESC LIMIT ?",
            (namespace, limit),
        )
        return [
            {
                "timestamp": micros_timestamp(r[0]),
                "action": ACTIONS[r[1]],
                "actor": r[2],
                "namespace": r[3],
                "key": r[4],
                "oldValue": r[5],
                "newValue": r[6],
            }
            for r in rows
        ]

    def first_change_since(self, timestamp: str) -> int | None:
        """Log index of the oldest retained change recorded at or after ``timestamp``.

        Walks the history from its oldest row, so it reads about as many rows as are older.
        """
        row = self._conn.execute(
            "SELECT eid FROM events WHERE ts_us >= ? ORDER BY eid LIMIT 1",
            (timestamp_micros(timestamp),),
        ).fetchone()
        return None if row is None else int(row[0]) >> SEQ_BITS

    def has_changes_through(self, index: int) -> bool:
        """True when the retained history holds a change at log ``index`` or before."""
        row = self._conn.execute(
            "SELECT 1 FROM events WHERE eid < ? LIMIT 1", (first_event_after(index),)
        )
        return row.fetchone() is not None

    def oldest_change_us(self) -> int | None:
        """Timestamp (microseconds) of the oldest retained change; None when there is none."""
        row = self._conn.execute("SELECT ts_us FROM events ORDER BY eid LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def retention_policy(self) -> tuple[int, int]:
        """The replicated retention policy: versions kept per key, and the age (seconds)
        under which nothing is pruned."""
        row = self._conn.execute("SELECT keep_versions, keep_age_s FROM history").fetchone()
        return int(row[0]), int(row[1])

    def history_floor(self) -> int:
        """The log index through which the change history has been compacted (0: none)."""
        row = self._conn.execute("SELECT compacted_through FROM history").fetchone()
        return 0 if row is None else int(row[0])

    def changes_since(self, index: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Changes applied after log ``index``, oldest first (see ``watch``, unfiltered)."""
        return self.watch(index, ChangeFilter(), limit).changes

    def watch(
        self, since: int, flt: ChangeFilter, limit: int = 1000, max_bytes: int | None = None
    ) -> ChangePage:
        """The changes matching ``flt`` applied after log index ``since``, oldest first.

        ``type`` is the audit action; ``value`` the new value (null on deletes);
        ``version`` the entry's version after the change (of the deleted entry on
        deletes, null for namespace events). About ``limit`` changes, and values of about
        ``max_bytes`` in all, are returned (rows are read one by one, so no more than that is
        held), but the changes of one log index are never split, so a watcher resumes from
        ``ChangePage.through``. Raises ``HistoryCompacted`` when changes after ``since``
        are no longer all retained.
        """
        where, params = flt.sql()
        limit = max(1, limit)
        budget = max_bytes if max_bytes is not None else float("inf")
        conn = self._conn
        rows: list[Any] = []
        size, cut_by_bytes = 0, False
        with self.consistent():
            floor = self.history_floor()
            if since < floor:
                raise HistoryCompacted(since, floor)
            applied = self.applied_index()
            through = applied
            cursor = conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM {_EVENTS} WHERE ev.eid >= ?{where} ORDER BY ev.eid",
                (first_event_after(since), *params),
            )
            try:
                for r in cursor:
                    idx = r[0] >> SEQ_BITS
                    if rows and idx != rows[-1][0] and (len(rows) >= limit or size >= budget):
                        through, cut_by_bytes = rows[-1][0], len(rows) < limit
                        break
                    rows.append((idx, *r[1:]))
                    size += _ROW_OVERHEAD + (len(r[4]) if r[4] is not None else 0)
            finally:
                cursor.close()
        changes = [
            {
                "type": ACTIONS[r[1]],
                "namespace": r[2],
                "key": r[3],
                "value": r[4],
                "version": r[5],
                "index": r[0],
            }
            for r in rows
        ]
        return ChangePage(changes, max(through, since), floor, applied, cut_by_bytes)


class HistoryCompacted(LookupError):
    """The changes after ``since`` were compacted away (history kept after ``floor``)."""

    def __init__(self, since: int, floor: int) -> None:
        super().__init__(f"changes after {since} were compacted (history starts after {floor})")
        self.since = since
        self.floor = floor


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """Which changes a watch wants: a namespace (optionally one key or a key prefix), or
    every namespace ``grants`` cover."""

    namespace: str | None = None
    key: str | None = None
    prefix: str | None = None
    grants: tuple[str, ...] = ("*",)

    def sql(self) -> tuple[str, list[Any]]:
        """The extra ``AND ...`` conditions on the events (``ev``, joined to their path
        ``p`` and key ``e``) and their parameters."""
        if self.namespace is None:
            clause = _grant_clause(self.grants, "p.path")
            return ("", []) if clause is None else (f" AND ({clause[0]})", list(clause[1]))
        where = " AND ev.ns_id = (SELECT ns_id FROM paths WHERE path = ?)"
        params: list[Any] = [self.namespace]
        if self.key is not None:
            where += " AND e.key = ?"
            params.append(self.key)
        elif self.prefix:
            where += " AND substr(e.key, 1, ?) = ?"
            params += [len(self.prefix), self.prefix]
        return where, params


#: Bytes counted per change besides its value (the other members as JSON), for ``max_bytes``.
_ROW_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A page of changes; ``through`` is the index to resume after (``since`` next time),
    ``applied`` the applied index of the state it was read from."""

    changes: list[dict[str, Any]]
    through: int
    compacted_through: int
    applied: int
    #: True when the page stopped early because its values reached ``max_bytes``.
    cut_by_bytes: bool = False
