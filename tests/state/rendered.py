"""The API-visible state of a state database, as JSON-able data (for migration tests).

Uses only ``queries.Reader``'s public methods, so it renders a format-1 database with the
format-1 code and a migrated one with the current code the same way.
"""

from __future__ import annotations

import os
from typing import Any

from confman.node.state.machine import ApplyResult
from confman.node.state.queries import ChangeFilter, HistoryCompacted, Reader


def rendered_state(db_path: str | os.PathLike[str], namespaces: list[str]) -> dict[str, Any]:
    """Namespaces, entries, audit of each of ``namespaces`` (also deleted ones), watches."""
    with Reader(db_path) as reader, reader.consistent():
        floor = reader.history_floor()
        state: dict[str, Any] = {
            "applied": reader.applied_index(),
            "floor": floor,
            "namespaces": reader.list_namespaces(),
            "entries": reader.list_all_entries(),
            "per_namespace": {ns: reader.list_entries(ns) for ns in namespaces},
            "audit": {ns: reader.audit(ns, 1000) for ns in namespaces},
            "watch": reader.watch(floor, ChangeFilter(), 100_000).changes,
            "watch_ns": {
                ns: reader.watch(floor, ChangeFilter(namespace=ns), 100_000).changes
                for ns in namespaces
            },
        }
        try:
            reader.watch(floor - 1, ChangeFilter())
            state["below_floor"] = "ok"
        except HistoryCompacted as exc:
            state["below_floor"] = [exc.since, exc.floor]
    return state


def result_json(result: ApplyResult) -> dict[str, Any]:
    """An apply result as JSON-able data (what the API renders from it)."""
    return {
        "index": result.index,
        "status": result.status.value,
        "detail": result.detail,
        "value": result.value,
        "members": [result_json(m) for m in result.members],
        "duplicate_of": result.duplicate_of,
    }
