"""What applying an entry returns: ``ApplyStatus`` and ``ApplyResult``, and their packed
form (the result an idempotency key replays is stored packed in the state database)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ApplyStatus(StrEnum):
    """Outcome of one entry (or of one member of a batch)."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    APPLIED = "applied"  # a batch whose members all succeeded
    NOT_FOUND = "not_found"
    PRECONDITION_FAILED = "precondition_failed"
    REJECTED = "rejected"
    KEY_REUSED = "key_reused"  # an idempotency key sent again with another request
    COMPACTED = "compacted"
    NOOP = "noop"


_FAILED = frozenset(
    {
        ApplyStatus.NOT_FOUND,
        ApplyStatus.PRECONDITION_FAILED,
        ApplyStatus.REJECTED,
        ApplyStatus.KEY_REUSED,
    }
)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The deterministic result of applying the entry at ``index``.

    ``value`` is the resulting Namespace/ConfigEntry in the API's camelCase shape (for a
    delete: the deleted one; for a failed precondition: the current entry, if any).
    ``members`` holds a batch's per-command results (up to and including the failing one).
    ``duplicate_of`` is set when an idempotency key made this a retry: the result is the
    one of the request applied at that index, and nothing was applied again.
    """

    index: int
    status: ApplyStatus
    detail: str = ""
    value: dict[str, Any] | None = None
    members: tuple[ApplyResult, ...] = ()
    duplicate_of: int | None = None

    @property
    def ok(self) -> bool:
        """True unless the command failed (not found, precondition, rejected)."""
        return self.status not in _FAILED


def pack_result(result: ApplyResult) -> list[Any]:
    """``result`` as msgpack-able lists (kept with an idempotency key)."""
    return [
        result.index,
        result.status.value,
        result.detail,
        result.value,
        [pack_result(m) for m in result.members],
    ]


def unpack_result(raw: list[Any]) -> ApplyResult:
    """The result ``pack_result`` packed."""
    index, status, detail, value, members = raw
    return ApplyResult(
        index, ApplyStatus(status), detail, value, tuple(unpack_result(m) for m in members)
    )
