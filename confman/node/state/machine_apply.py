"""The per-command apply functions of the state machine: configuration entries, namespaces,
batches and history compaction, each writing its rows and audit events.

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
from confman.node.state.machine_results import ApplyResult, ApplyStatus
from confman.node.state.schema import ENTRY_COLUMNS, entry_dict, namespace_dict


class CommandApply:
    """Applies one command of a request, inside the transaction ``StateMachine.apply`` holds."""

    #: Audit rows of the batch being applied, written by ``StateMachine.apply``.
    _audit: list[tuple[Any, ...]]
    #: Audit sequence number within the entry being applied.
    _seq: int
    #: Paths of the namespaces that exist (a cache of the ``namespaces`` table).
    _namespaces: set[str]

    if TYPE_CHECKING:  # provided by StateMachine

        @property
        def conn(self) -> sqlite3.Connection: ...

        def _reload_caches(self) -> None: ...

    def _audit_event(
        self,
        index: int,
        req: Request,
        action: str,
        namespace: str,
        key: str | None = None,
        old: str | None = None,
        new: str | None = None,
        version: int | None = None,
    ) -> None:
        self._audit.append(
            (index, self._seq, req.timestamp, action, req.actor, namespace, key, old, new, version)
        )
        self._seq += 1

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

    def _compact_history(self, index: int, cmd: CompactHistory) -> ApplyResult:
        """Delete audit rows up to ``cmd.through`` (never this entry's own or later ones)."""
        conn = self.conn
        floor = conn.execute("SELECT compacted_through FROM history").fetchone()[0]
        through = min(cmd.through, index - 1)
        if through <= floor:
            return ApplyResult(
                index, ApplyStatus.NOOP, f"history already compacted through {floor}"
            )
        conn.execute("DELETE FROM audit WHERE idx <= ?", (through,))
        self._audit = [row for row in self._audit if row[0] > through]  # this batch's rows
        conn.execute("UPDATE history SET compacted_through = ? WHERE id = 0", (through,))
        return ApplyResult(
            index,
            ApplyStatus.COMPACTED,
            f"history compacted through {through}",
            {"compactedThrough": through},
        )

    def _batch(self, index: int, req: Request, cmd: Batch) -> ApplyResult:
        if not cmd.commands:
            return ApplyResult(index, ApplyStatus.NOOP, "empty batch")
        conn = self.conn
        mark = len(self._audit), self._seq
        conn.execute("SAVEPOINT batch")
        members: list[ApplyResult] = []
        total = len(cmd.commands)
        for number, member in enumerate(cmd.commands, start=1):
            result = self._run(index, req, member)
            members.append(result)
            if not result.ok:
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
                del self._audit[mark[0] :]
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
        if row is None:
            conn.execute(
                "INSERT INTO namespaces VALUES (?, ?, ?, ?, ?)",
                (cmd.path, cmd.description, cmd.owner, req.timestamp, req.timestamp),
            )
            self._namespaces.add(cmd.path)
            self._audit_event(index, req, "namespace.created", cmd.path)
            status, created_at = ApplyStatus.CREATED, req.timestamp
        else:
            conn.execute(
                "UPDATE namespaces SET description = ?, owner = ?, updated_at = ? WHERE path = ?",
                (cmd.description, cmd.owner, req.timestamp, cmd.path),
            )
            self._audit_event(index, req, "namespace.updated", cmd.path)
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
        doomed = conn.execute(
            "SELECT key, value, version FROM entries WHERE namespace = ? ORDER BY key",
            (cmd.path,),
        ).fetchall()
        for key, value, version in doomed:
            self._audit_event(index, req, "config.deleted", cmd.path, key, value, None, version)
        conn.execute("DELETE FROM entries WHERE namespace = ?", (cmd.path,))
        conn.execute("DELETE FROM namespaces WHERE path = ?", (cmd.path,))
        self._namespaces.discard(cmd.path)
        self._audit_event(index, req, "namespace.deleted", cmd.path)
        return ApplyResult(
            index,
            ApplyStatus.DELETED,
            f"namespace deleted with {len(doomed)} entries",
            namespace_dict(row),
        )

    def _current_entry(self, namespace: str, key: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE namespace = ? AND key = ?",
            (namespace, key),
        ).fetchone()
        return row

    @staticmethod
    def _check_version(
        index: int, expected: int | None, current: tuple[Any, ...] | None, must_exist: bool
    ) -> ApplyResult | None:
        if must_exist and current is None:
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
        if current[4] != expected:
            return ApplyResult(
                index,
                ApplyStatus.PRECONDITION_FAILED,
                f"Version mismatch: expected {expected}, current {current[4]}",
                entry_dict(current),
            )
        return None

    def _put_config(self, index: int, req: Request, cmd: PutConfig) -> ApplyResult:
        if not self._namespace_exists(cmd.namespace):
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Namespace not found")
        current = self._current_entry(cmd.namespace, cmd.key)
        if cmd.create_only and current is not None:
            return ApplyResult(
                index,
                ApplyStatus.PRECONDITION_FAILED,
                "Configuration already exists",
                entry_dict(current),
            )
        failed = self._check_version(index, cmd.expected_version, current, cmd.must_exist)
        if failed is not None:
            return failed
        conn = self.conn
        if current is None:
            version = 1
            conn.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (
                    cmd.namespace,
                    cmd.key,
                    cmd.value,
                    cmd.type,
                    req.timestamp,
                    req.actor,
                    index,
                    index,
                ),
            )
            self._audit_event(
                index, req, "config.created", cmd.namespace, cmd.key, None, cmd.value, 1
            )
            status = ApplyStatus.CREATED
        else:
            version = current[4] + 1
            conn.execute(
                "UPDATE entries SET value = ?, type = ?, version = ?, updated_at = ?,"
                " updated_by = ?, mod_index = ? WHERE namespace = ? AND key = ?",
                (
                    cmd.value,
                    cmd.type,
                    version,
                    req.timestamp,
                    req.actor,
                    index,
                    cmd.namespace,
                    cmd.key,
                ),
            )
            self._audit_event(
                index, req, "config.updated", cmd.namespace, cmd.key, current[2], cmd.value, version
            )
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
        return ApplyResult(index, status, f"configuration {status.value}", value)

    def _delete_config(self, index: int, req: Request, cmd: DeleteConfig) -> ApplyResult:
        if not self._namespace_exists(cmd.namespace):
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Namespace not found")
        current = self._current_entry(cmd.namespace, cmd.key)
        failed = self._check_version(index, cmd.expected_version, current, cmd.must_exist)
        if failed is not None:
            return failed
        if current is None:
            return ApplyResult(index, ApplyStatus.NOT_FOUND, "Configuration not found")
        self.conn.execute(
            "DELETE FROM entries WHERE namespace = ? AND key = ?", (cmd.namespace, cmd.key)
        )
        self._audit_event(
            index, req, "config.deleted", cmd.namespace, cmd.key, current[2], None, current[4]
        )
        return ApplyResult(index, ApplyStatus.DELETED, "configuration deleted", entry_dict(current))
