"""What the API returns, as typed values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Namespace:
    path: str
    description: str | None
    owner: str | None
    created_at: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Namespace:
        return cls(d["path"], d.get("description"), d.get("owner"), d["createdAt"])


@dataclass(frozen=True, slots=True)
class Entry:
    """A configuration entry. ``index``: the log index of the write that returned it, or the
    applied index of the node a read was answered from (pass it as ``min_index``)."""

    namespace: str
    key: str
    value: str
    type: str
    version: int
    updated_at: str
    updated_by: str
    index: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any], index: int | None = None) -> Entry:
        return cls(
            d["namespace"],
            d["key"],
            d["value"],
            d["type"],
            int(d["version"]),
            d["updatedAt"],
            d["updatedBy"],
            index,
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    timestamp: str
    action: str
    actor: str
    namespace: str
    key: str | None
    old_value: str | None
    new_value: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AuditEvent:
        return cls(
            d["timestamp"],
            d["action"],
            d["actor"],
            d["namespace"],
            d.get("key"),
            d.get("oldValue"),
            d.get("newValue"),
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One committed change. ``type`` is the audit action (``config.updated``, ...)."""

    type: str
    namespace: str
    key: str | None
    value: str | None
    version: int | None
    index: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WatchEvent:
        return cls(
            d["type"], d["namespace"], d.get("key"), d.get("value"), d.get("version"), d["index"]
        )


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A long-poll answer: pass ``index`` as the next ``since``."""

    index: int
    events: list[WatchEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One endpoint's ``/health/ready`` (``reachable`` False when it did not answer)."""

    endpoint: str
    reachable: bool
    ready: bool = False
    node_id: str | None = None
    role: str | None = None
    leader: str | None = None
    term: int | None = None
    commit_index: int | None = None
    applied_index: int | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, endpoint: str, d: dict[str, Any]) -> NodeStatus:
        c = d.get("cluster") or {}
        return cls(
            endpoint,
            True,
            d.get("status") == "ready",
            c.get("nodeId"),
            c.get("role"),
            c.get("leader"),
            c.get("term"),
            c.get("commitIndex"),
            c.get("appliedIndex"),
        )
