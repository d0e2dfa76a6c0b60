"""The per-command apply functions of the state machine: configuration entries, namespaces
and batches, each writing its versions and events (history compaction: ``history``).

Each put writes its value once, as a row of ``versions``; a delete writes a tombstone
version (no value) carrying the deleted version's number. ``entries.vid`` points at a key's
current version (NULL once deleted). Events refer to versions: an event's own version has
the event's id; ``prev_vid`` is the version it replaced (the API's ``oldValue``).

``CommandApply`` is a mixin of ``machine.StateMachine``, which owns the connection, the
transaction around a batch of entries and the caches these functions keep current.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from confman.node.state.commands import (
    Batch,
    Command,
    CompactHistory,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
    Request,
)
from confman.node.state.history import HistoryApply
from confman.node.state.machine_results import ApplyResult, ApplyStatus
from confman.node.state.schema import (
    ACTION_CODES,
    SEQ_LIMIT,
    entry_dict,
    event_id,
    namespace_dict,
)

_CREATED = ACTION_CODES["config.created"]
_UPDATED = ACTION_CODES["config.updated"]
_DELETED = ACTION_CODES["config.deleted"]

#: A key's current version: key_id, vid, version, value, type, ts_us, actor_id.
Current = tuple[int, int, int, str, str, int, int]


class CommandApply(HistoryApply):
    """Applies one command of a request, inside the transaction ``StateMachine.apply`` holds."""

    #: Event rows of the batch being applied, written by ``StateMachine.apply``.
    _events: list[tuple[Any, ...]]
    #: Event sequence number within the entry being applied.
    _seq: int
    #: Paths of the namespaces that exist (a cache of the ``namespaces`` table).
    _namespaces: set[str]
    #: Every namespace path ever used and its id (a cache of ``paths``).
    _ns_ids: dict[str, int]
    #: ``timestamp_micros`` of the request being applied.
    _ts_us: int
    #: Actor names and ids both ways (a cache of ``actors``).
    _actor_ids: dict[str, int]
    _actor_names: dict[int, str]

    if TYPE_CHECKING:  # provided by StateMachine

        @property
        def conn(self) -> sqlite3.Connection: ...

        def _reload_caches(self) -> None: ...

    # -- ids ------------------------------------------------------------------------------
    def _next_id(self, index: int) -> int:
        seq = self._seq
        if seq >= SEQ_LIMIT:  # checked by callers that write many events; never reached
            raise OverflowError(f"more than {SEQ_LIMIT - 1} events in log entry {index}")
        self._seq = seq + 1
        return event_id(index, seq)

    def _actor_id(self, name: str) -> int:
        actor = self._actor_ids.get(name)
        if actor is None:
            cur = self.conn.execute("INSERT INTO actors (name) VALUES (?)", (name,))
            actor = cur.lastrowid
            assert actor is not None
            self._actor_ids[name] = actor
            self._actor_names[actor] = name
        return actor

    def _ns_id(self, path: str) -> int:
        ns = self._ns_ids.get(path)
        if ns is None:
            cur = self.conn.execute("INSERT INTO paths (path) VALUES (?)", (path,))
            ns = cur.lastrowid
            assert ns is not None
            self._ns_ids[path] = ns
        return ns

    def _event(
        self,
        eid: int,
        action: int,
        ns_id: int,
        req: Request,
        key_id: int | None = None,
        prev_vid: int | None = None,
    ) -> None:
        self._events.append(
            (eid, action, ns_id, key_id, prev_vid, self._ts_us, self._actor_id(req.actor))
        )

    # -- commands -------------------------------------------------------------------------
    def _run(self, index: int, req: Request, cmd: Command) -> ApplyResult:
        if isinstance(cmd, PutConfig):
            return self._put_config(index, req, cmd)
        if isinstance(cmd, DeleteConfig):
            return self._delete_config(index, req, cmd)
        if isinstance(cmd, PutNamespace):
            return self._put_namespace(index, req, cmd)
        if isinstance(cmd, DeleteNamespace):
            return self._delete_namespace(index, req, cmd)
        if isinstance(cmd, CompactHistory):
            return self._compact_history(index, cmd)
        return self._batch(index, req, cmd)

    def _batch(self, index: int, req: Request, cmd: Batch) -> ApplyResult:
        if not cmd.commands:
            return ApplyResult(index, ApplyStatus.NOOP, "empty batch")
        conn = self.conn
        mark = len(self._events), self._seq
        conn.execute("SAVEPOINT batch")
        members: list[ApplyResult] = []
        total = len(cmd.commands)
        for number, member in enumerate(cmd.commands, start=1):
            result = self._run(index, req, member)
            members.append(result)
            if not result.ok:
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                del self._events[mark[0] :]
                self._seq = mark[1]
                self._reload_caches()
                return ApplyResult(
                    index,
                    result.status,
                    f"Batch command {number} of {total} failed, nothing applied: {result.detail}",
                    None,
                    tuple(members),
                )
        conn.execute("RELEASE batch")
        return ApplyResult(
            index, ApplyStatus.APPLIED, f"{total} commands applied", None, tuple(members)
        )

    def _namespace_exists(self, path: str) -> bool:
        return path in self._namespaces

    def _put_namespace(self, index: int, req: Request, cmd: PutNamespace) -> ApplyResult:
        conn = self.conn
        row = conn.execute(
            "SELECT created_at FROM namespaces WHERE path = ?", (cmd.path,)
        ).fetchone()
        ns_id = self._ns_id(cmd.path)
        if row is None:
            conn.execute(
                "INSERT INTO namespaces VALUES (?, ?, ?, ?, ?)",
                (cmd.path, cmd.description, cmd.owner, req.timestamp, req.timestamp),
            )
            self._namespaces.add(cmd.path)
            self._event(self._next_id(index), ACTION_CODES["namespace.created"], ns_id, req)
            status, created_at = ApplyStatus.CREATED, req.timestamp
        else:
            conn.execute(
                "UPDATE namespaces SET description = ?, owner = ?, updated_at = ? WHERE path = ?",
                (cmd.description, cmd.owner, req.timestamp, cmd.path),
            )
            self._event(self._next_id(index), ACTION_CODES["namespace.updated"], ns_id, req)
            status, created_at = ApplyStatus.UPDATED, row[0]
        value = namespace_dict((cmd.path, cmd.description, cmd.owner, created_at))
        return ApplyResult(index, status, f"namespace {status.value}", value)

    def _delete_namespace(self, index: int, req: Request, cmd: DeleteNamespace) -> ApplyResult:
        conn = self.conn
        row = conn.execute(
            "SELECT path, description, owner, created_at FROM namespaces WHERE path = ?",
            (cmd.path,),
        ).fetchone()
        if row is None:
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Namespace not found")
        ns_id = self._ns_ids[cmd.path]
        doomed = conn.execute(
            "SELECT e.key_id, e.vid, v.version FROM entries e JOIN versions v ON v.vid = e.vid"
            " WHERE e.ns_id = ? ORDER BY e.key",
            (ns_id,),
        ).fetchall()
        if self._seq + len(doomed) + 1 > SEQ_LIMIT:
            reason = f"namespace has {len(doomed)} entries, more than one log entry can delete"
            return ApplyResult(index, ApplyStatus.REJECTED, reason)
        ts, actor = self._ts_us, self._actor_id(req.actor)
        tombstones, events = [], []
        for key_id, vid, version in doomed:
            eid = self._next_id(index)
            tombstones.append((eid, key_id, version, ts, actor))
            events.append((eid, _DELETED, ns_id, key_id, vid, ts, actor))
        conn.executemany("INSERT INTO versions VALUES (?, ?, ?, NULL, NULL, ?, ?)", tombstones)
        self._events += events
        conn.execute("UPDATE entries SET vid = NULL WHERE ns_id = ? AND vid IS NOT NULL", (ns_id,))
        conn.execute("DELETE FROM namespaces WHERE path = ?", (cmd.path,))
        self._namespaces.discard(cmd.path)
        self._event(self._next_id(index), ACTION_CODES["namespace.deleted"], ns_id, req)
        return ApplyResult(
            index,
            ApplyStatus.DELETED,
            f"namespace deleted with {len(doomed)} entries",
            namespace_dict(row),
        )

    def _lookup(self, ns_id: int, key: str) -> tuple[int | None, Current | None]:
        """The key's id (None if never used) and its current version (None if absent)."""
        row = self.conn.execute(
            "SELECT e.key_id, e.vid, v.version, v.value, v.type, v.ts_us, v.actor_id"
            " FROM entries e LEFT JOIN versions v ON v.vid = e.vid"
            " WHERE e.ns_id = ? AND e.key = ?",
            (ns_id, key),
        ).fetchone()
        if row is None:
            return None, None
        return row[0], (row if row[1] is not None else None)

    def _current_dict(self, namespace: str, key: str, current: Current) -> dict[str, Any]:
        return entry_dict(
            (
                namespace,
                key,
                current[3],
                current[4],
                current[2],
                current[5],
                self._actor_names[current[6]],
            )
        )

    def _check_version(
        self,
        index: int,
        cmd: PutConfig | DeleteConfig,
        current: Current | None,
    ) -> ApplyResult | None:
        expected = cmd.expected_version
        if cmd.must_exist and current is None:
            return ApplyResult(
                index, ApplyStatus.PRECONDITION_FAILED, "Configuration does not exist (If-Match: *)"
            )
        if expected is None:
            return None
        if current is None:
            return ApplyResult(
                index,
                ApplyStatus.PRECONDITION_FAILED,
                f"Version mismatch: expected {expected}, configuration does not exist",
            )
        if current[2] != expected:
            return ApplyResult(
                index,
                ApplyStatus.PRECONDITION_FAILED,
                f"Version mismatch: expected {expected}, current {current[2]}",
                self._current_dict(cmd.namespace, cmd.key, current),
                vid=current[1],
            )
        return None

    def _put_config(self, index: int, req: Request, cmd: PutConfig) -> ApplyResult:
        if not self._namespace_exists(cmd.namespace):
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Namespace not found")
        ns_id = self._ns_ids[cmd.namespace]
        key_id, current = self._lookup(ns_id, cmd.key)
        if cmd.create_only and current is not None:
            return ApplyResult(
                index,
                ApplyStatus.PRECONDITION_FAILED,
                "Configuration already exists",
                self._current_dict(cmd.namespace, cmd.key, current),
                vid=current[1],
            )
        failed = self._check_version(index, cmd, current)
        if failed is not None:
            return failed
        conn = self.conn
        vid = self._next_id(index)
        if key_id is None:
            cur = conn.execute(
                "INSERT INTO entries (ns_id, key, vid) VALUES (?, ?, ?)", (ns_id, cmd.key, vid)
            )
            key_id = cur.lastrowid
            assert key_id is not None
        else:
            conn.execute("UPDATE entries SET vid = ? WHERE key_id = ?", (vid, key_id))
        version = 1 if current is None else current[2] + 1
        conn.execute(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (vid, key_id, version, cmd.value, cmd.type, self._ts_us, self._actor_id(req.actor)),
        )
        if current is None:
            self._event(vid, _CREATED, ns_id, req, key_id)
            status = ApplyStatus.CREATED
        else:
            self._event(vid, _UPDATED, ns_id, req, key_id, current[1])
            status = ApplyStatus.UPDATED
        value = {
            "namespace": cmd.namespace,
            "key": cmd.key,
            "value": cmd.value,
            "type": cmd.type,
            "version": version,
            "updatedAt": req.timestamp,
            "updatedBy": req.actor,
        }
        return ApplyResult(index, status, f"configuration {status.value}", value, vid=vid)

    def _delete_config(self, index: int, req: Request, cmd: DeleteConfig) -> ApplyResult:
        if not self._namespace_exists(cmd.namespace):
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Namespace not found")
        ns_id = self._ns_ids[cmd.namespace]
        key_id, current = self._lookup(ns_id, cmd.key)
        failed = self._check_version(index, cmd, current)
        if failed is not None:
            return failed
        if current is None:
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Configuration not found")
        conn = self.conn
        eid = self._next_id(index)
        conn.execute(
            "INSERT INTO versions VALUES (?, ?, ?, NULL, NULL, ?, ?)",
            (eid, key_id, current[2], self._ts_us, self._actor_id(req.actor)),
        )
        conn.execute("UPDATE entries SET vid = NULL WHERE key_id = ?", (key_id,))
        self._event(eid, _DELETED, ns_id, req, key_id, current[1])
        return ApplyResult(
            index,
            ApplyStatus.DELETED,
            "configuration deleted",
            self._current_dict(cmd.namespace, cmd.key, current),
            vid=current[1],
        )
