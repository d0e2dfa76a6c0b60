"""What applying an entry returns: ``ApplyStatus`` and ``ApplyResult``, and their packed
form (the result an idempotency key replays is stored packed in the state database).

Packed formats (msgpack):

- format 1 (written by schema-1 releases, still decoded): ``[index, status, detail, value,
  [member, ...]]`` with the value embedded.
- format 2: ``[2, index, status, detail, value, [member, ...]]`` where ``value`` is the
  version id (an integer) when the result is a configuration entry, rendered from
  ``versions`` when read back, else the embedded dict or None (namespaces, compactions).
  A format-1 result's first element is its index, a format-2 one's is 2 followed by an
  index: the two are told apart by length (5 against 6 elements).
"""

from __future__ import annotations

from collections.abc import Callable
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

#: The first element of a format-2 packed result.
RESULT_FORMAT = 2


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The deterministic result of applying the entry at ``index``.

    ``value`` is the resulting Namespace/ConfigEntry in the API's camelCase shape (for a
    delete: the deleted one; for a failed precondition: the current entry, if any).
    ``members`` holds a batch's per-command results (up to and including the failing one).
    ``duplicate_of`` is set when an idempotency key made this a retry: the result is the
    one of the request applied at that index, and nothing was applied again.
    ``vid`` is the id of the version ``value`` renders, when it is a ConfigEntry (what a
    stored idempotency result keeps instead of the value).
    """

    index: int
    status: ApplyStatus
    detail: str = ""
    value: dict[str, Any] | None = None
    members: tuple[ApplyResult, ...] = ()
    duplicate_of: int | None = None
    vid: int | None = None

    @property
    def ok(self) -> bool:
        """True unless the command failed (not found, precondition, rejected)."""
        return self.status not in _FAILED


def pack_result(result: ApplyResult) -> list[Any]:
    """``result`` as msgpack-able lists (format 2, kept with an idempotency key)."""
    return [
        RESULT_FORMAT,
        result.index,
        result.status.value,
        result.detail,
        result.vid if result.vid is not None else result.value,
        [pack_result(m) for m in result.members],
    ]


def pack_result_v1(result: ApplyResult) -> list[Any]:
    """``result`` in format 1 (values embedded): what a stored result becomes when a version
    it refers to is compacted away."""
    return [
        result.index,
        result.status.value,
        result.detail,
        result.value,
        [pack_result_v1(m) for m in result.members],
    ]


def result_index(raw: list[Any]) -> int:
    """The index of the entry whose result ``raw`` (either format) is."""
    index: int = raw[1] if len(raw) == 6 else raw[0]
    return index


def result_vids(raw: list[Any]) -> list[int]:
    """The version ids a packed result refers to (none in format 1)."""
    if len(raw) != 6:
        return []
    found = [raw[4]] if isinstance(raw[4], int) else []
    for member in raw[5]:
        found += result_vids(member)
    return found


def unpack_result(
    raw: list[Any], render: Callable[[int], dict[str, Any]] | None = None
) -> ApplyResult:
    """The result ``pack_result`` (or format 1's packer) packed; ``render`` gives the
    ConfigEntry of a version id (needed for format-2 results that refer to one)."""
    if len(raw) == 6:
        _, index, status, detail, value, members = raw
        vid = None
        if isinstance(value, int):
            if render is None:
                raise ValueError("a format-2 result refers to a version: render needed")
            vid, value = value, render(value)
        return ApplyResult(
            index,
            ApplyStatus(status),
            detail,
            value,
            tuple(unpack_result(m, render) for m in members),
            vid=vid,
        )
    index, status, detail, value, members = raw
    return ApplyResult(
        index, ApplyStatus(status), detail, value, tuple(unpack_result(m) for m in members)
    )
