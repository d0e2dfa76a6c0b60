"""History compaction in the state machine. ``CompactHistory(through)`` deletes every event
of a log index up to ``through`` (never the entry's own or later ones) and the versions no
one needs any more, and raises the floor below which watches answer 410 (what it did in
format 1); then it prunes what the replicated retention policy no longer keeps
(``retention``), so a leader proposing ``CompactHistory(0)`` asks for pruning by policy
alone.

A version outlives its event while it is still needed: as a key's current value, or as
the ``oldValue`` (``prev_vid``) of the key's oldest retained event. An idempotency result
that refers to a version about to go is rewritten in format 1 (values embedded) first, so
retries keep answering the same. A deleted key's ``entries`` row goes with its last version.

``HistoryApply`` is a mixin of ``machine.StateMachine`` (through ``CommandApply``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import msgpack

from confman.node.state.commands import CompactHistory
from confman.node.state.machine_results import (
    ApplyResult,
    ApplyStatus,
    pack_result_v1,
    result_vids,
    unpack_result,
)
from confman.node.state.retention import RetentionApply
from confman.node.state.schema import ENTRY_COLUMNS, ENTRY_JOIN, entry_dict, first_event_after


class HistoryApply(RetentionApply):
    """Writes the batch's buffered events, renders versions, compacts history."""

    #: Event rows of the batch being applied, not yet inserted.
    _events: list[tuple[Any, ...]]
    #: ``timestamp_micros`` of the request being applied.
    _ts_us: int

    if TYPE_CHECKING:  # provided by StateMachine

        @property
        def conn(self) -> sqlite3.Connection: ...

    def _flush_events(self) -> None:
        if self._events:
            self.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", self._events)
            self._events = []

    def _render_version(self, vid: int) -> dict[str, Any]:
        """The ConfigEntry version ``vid`` is (it must exist)."""
        row = self.conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM versions v {ENTRY_JOIN} WHERE v.vid = ?", (vid,)
        ).fetchone()
        if row is None:
            raise LookupError(f"version {vid} is not in the database")
        return entry_dict(row)

    def _compact_history(self, index: int, cmd: CompactHistory) -> ApplyResult:
        """Delete events up to ``cmd.through`` (never this entry's own or later ones), then
        prune what the retention policy in the ``history`` row no longer keeps, at this
        entry's time (``retention``)."""
        conn = self.conn
        floor, keep, age_s, budget = conn.execute(
            "SELECT compacted_through, keep_versions, keep_age_s, prune_budget FROM history"
        ).fetchone()
        through = min(cmd.through, index - 1)
        if through > floor:
            self._truncate_history(through)
        pruned = self._prune_history(index, self._ts_us, keep, age_s, budget)
        if through > floor:
            return ApplyResult(
                index,
                ApplyStatus.COMPACTED,
                f"history compacted through {max(through, pruned.through)}",
                {"compactedThrough": max(through, pruned.through)},
            )
        if pruned.rows:
            return ApplyResult(
                index,
                ApplyStatus.COMPACTED,
                f"history pruned: {pruned.rows} rows" + (", more to prune" if pruned.more else ""),
                {
                    "compactedThrough": max(floor, pruned.through),
                    "pruned": pruned.rows,
                    "more": pruned.more,
                },
            )
        return ApplyResult(index, ApplyStatus.NOOP, f"history already compacted through {floor}")

    def _truncate_history(self, through: int) -> None:
        """Delete every event of a log index up to ``through``; the floor becomes it."""
        conn = self.conn
        self._flush_events()  # this batch's earlier events are history too
        limit = first_event_after(through)
        keys = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT key_id FROM events WHERE eid < ? AND key_id IS NOT NULL"
                " ORDER BY key_id",
                (limit,),
            )
        ]
        conn.execute("DELETE FROM events WHERE eid < ?", (limit,))
        doomed: list[int] = []
        for key_id in keys:
            doomed += self._unneeded_versions(key_id, limit)
        if doomed:
            self._embed_results(set(doomed))
            conn.executemany("DELETE FROM versions WHERE vid = ?", [(v,) for v in doomed])
            conn.executemany(
                "DELETE FROM entries WHERE key_id = ? AND vid IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM versions WHERE key_id = ?)",
                [(k, k) for k in keys],
            )
        conn.execute("UPDATE history SET compacted_through = ? WHERE id = 0", (through,))

    def _unneeded_versions(self, key_id: int, limit: int) -> list[int]:
        """Versions of ``key_id`` older than event ``limit`` that nothing refers to now."""
        conn = self.conn
        keep = set()
        row = conn.execute("SELECT vid FROM entries WHERE key_id = ?", (key_id,)).fetchone()
        if row is not None and row[0] is not None:
            keep.add(row[0])
        row = conn.execute(
            "SELECT prev_vid FROM events WHERE eid ="
            " (SELECT min(vid) FROM versions WHERE key_id = ? AND vid >= ?)",
            (key_id, limit),
        ).fetchone()
        if row is not None and row[0] is not None:
            keep.add(row[0])
        old = conn.execute(
            "SELECT vid FROM versions WHERE key_id = ? AND vid < ?", (key_id, limit)
        ).fetchall()
        return [vid for (vid,) in old if vid not in keep]

    def _embed_results(self, doomed: set[int]) -> None:
        """Rewrite in format 1 the stored results that refer to a version in ``doomed``."""
        conn = self.conn
        rewrite: list[tuple[bytes, str]] = []
        for key, blob in conn.execute("SELECT key, result FROM idempotency"):
            raw = msgpack.unpackb(blob, raw=False)
            if doomed.isdisjoint(result_vids(raw)):
                continue
            result = unpack_result(raw, self._render_version)
            rewrite.append((msgpack.packb(pack_result_v1(result)), key))
        conn.executemany("UPDATE idempotency SET result = ? WHERE key = ?", rewrite)
