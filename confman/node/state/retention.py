"""Per-key history retention: the apply step of pruning by policy (docs/storage.md §5).

``RetentionApply._prune_history(index, now_us, keep_versions, keep_age_s, budget)`` deletes
history the policy no longer keeps: a version (and its event) goes only when it is outside
**both** the newest ``keep_versions`` versions of its key **and** younger than
``keep_age_s`` at ``now_us`` (the entry's own timestamp), oldest first per key, so what a
key retains is always a contiguous run of its newest versions. A deleted key whose
tombstone is older than the age limit loses its whole history (tombstone and ``entries``
row included). Namespace events follow the same rule per namespace. A key's current value
is never pruned, and the value its oldest retained event replaced stays (``oldValue``).

Everything is decided from the database and the arguments, which travel in the log entry
(the timestamp included), so every node prunes the same rows. The floor below which
watches answer 410 (``history.compacted_through``) becomes the greatest log index of any
pruned event: a watch from ``since >= floor`` misses nothing, since nothing after the
floor was pruned.

The policy is the ``history`` row (``keep_versions``, ``keep_age_s``, ``prune_budget``;
defaults 100, 7 days, 1,000 rows): replicated state, set when the database is created (no
command changes it yet). Pruning runs at the end of every ``CompactHistory`` entry
(``history``), the leader's compactor proposes ``CompactHistory(0)`` to prune by policy
alone (``confman.api.compaction``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confman.node.state.schema import SEQ_BITS

_MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune did: rows deleted, the greatest log index of a pruned event (0 if
    none), and whether the budget stopped it before all the policy allows was pruned."""

    rows: int
    through: int
    more: bool


class RetentionApply:
    """Pruning by policy, inside the transaction ``StateMachine.apply`` holds."""

    if TYPE_CHECKING:  # provided by HistoryApply / StateMachine

        @property
        def conn(self) -> sqlite3.Connection: ...

        def _flush_events(self) -> None: ...

        def _embed_results(self, doomed: set[int]) -> None: ...

    def _prune_history(
        self, index: int, now_us: int, keep_versions: int, keep_age_s: int, budget: int
    ) -> Pruned:
        """Prune up to about ``budget`` rows of history the policy no longer keeps."""
        if keep_versions < 1 or keep_age_s < 0 or budget < 1:
            raise ValueError("keep_versions and budget must be >= 1, keep_age_s >= 0")
        self._flush_events()
        conn = self.conn
        cutoff = now_us - keep_age_s * _MICROS
        events: list[int] = []  # event ids to delete
        versions: list[int] = []  # version ids to delete
        gone_keys: list[int] = []  # deleted keys whose history goes entirely
        candidates = conn.execute(
            "SELECT key_id FROM versions GROUP BY key_id HAVING count(*) > ? ORDER BY key_id",
            (keep_versions,),
        ).fetchall()
        deleted = conn.execute(
            "SELECT key_id FROM entries WHERE vid IS NULL ORDER BY key_id"
        ).fetchall()
        more = False
        for (key_id,) in sorted(set(candidates) | set(deleted)):
            room = budget - len(events) - len(versions)
            if room <= 0 or not self._prune_key(
                key_id, keep_versions, cutoff, room, events, versions, gone_keys
            ):
                more = True
                break
        self._prune_namespace_events(keep_versions, cutoff, events)
        if not events and not versions:
            return Pruned(0, 0, False)
        if versions:
            self._embed_results(set(versions))
        conn.executemany("DELETE FROM events WHERE eid = ?", [(e,) for e in events])
        conn.executemany("DELETE FROM versions WHERE vid = ?", [(v,) for v in versions])
        conn.executemany("DELETE FROM entries WHERE key_id = ?", [(k,) for k in gone_keys])
        floor = max(events) >> SEQ_BITS if events else 0
        conn.execute(
            "UPDATE history SET compacted_through = max(compacted_through, ?) WHERE id = 0",
            (floor,),
        )
        return Pruned(len(events) + len(versions), floor, more)

    def _prune_key(
        self,
        key_id: int,
        keep_versions: int,
        cutoff: int,
        room: int,
        events: list[int],
        versions: list[int],
        gone_keys: list[int],
    ) -> bool:
        """Add what the policy lets go of ``key_id`` to the lists, at most about ``room``
        rows; False when ``room`` cut it short."""
        conn = self.conn
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT v.vid, v.ts_us, ev.eid IS NOT NULL FROM versions v"
            " LEFT JOIN events ev ON ev.eid = v.vid WHERE v.key_id = ? ORDER BY v.vid",
            (key_id,),
        ).fetchall()
        current = conn.execute("SELECT vid FROM entries WHERE key_id = ?", (key_id,)).fetchone()
        limit = max(1, room // 2)  # a version and its event per step
        if current is not None and current[0] is None and rows and rows[-1][1] < cutoff:
            if len(rows) <= limit:  # deleted long enough ago: the count protects nothing
                events += [vid for vid, _, has_event in rows if has_event]
                versions += [vid for vid, _, _ in rows]
                gone_keys.append(key_id)
                return True
            keep_versions = 1  # the rest of it goes first, the tombstone next time
        prefix = 0
        for _vid, ts_us, _ in rows[: max(0, len(rows) - keep_versions)]:
            if ts_us >= cutoff or prefix == limit:
                break
            prefix += 1
        if prefix == 0:
            return True
        pruned, kept = rows[:prefix], rows[prefix:]
        events += [vid for vid, _, has_event in pruned if has_event]
        keep_prev = conn.execute(
            "SELECT prev_vid FROM events WHERE eid = ?", (kept[0][0],)
        ).fetchone()
        carrier = keep_prev[0] if keep_prev is not None else None
        versions += [vid for vid, _, _ in pruned if vid != carrier]
        return prefix < limit or len(rows) - prefix <= keep_versions

    def _prune_namespace_events(self, keep: int, cutoff: int, events: list[int]) -> None:
        conn = self.conn
        for (ns_id,) in conn.execute(
            "SELECT ns_id FROM events WHERE key_id IS NULL GROUP BY ns_id HAVING count(*) > ?"
            " ORDER BY ns_id",
            (keep,),
        ).fetchall():
            rows = conn.execute(
                "SELECT eid, ts_us FROM events WHERE ns_id = ? AND key_id IS NULL ORDER BY eid",
                (ns_id,),
            ).fetchall()
            for eid, ts_us in rows[: len(rows) - keep]:
                if ts_us >= cutoff:
                    break
                events.append(eid)
