"""Operation histories: the record type, a recorder for concurrent clients, JSON-lines I/O.

A history is a list of `Operation`s. Timestamps are monotonic seconds (any consistent clock
works: the parsers use line numbers). An operation whose status is `info`, or whose `ret` is
None, is indeterminate: it may have taken effect at any point after its call, or never.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

Status = Literal["ok", "fail", "info"]
STATUSES: tuple[Status, ...] = ("ok", "fail", "info")


class _Unknown:
    """The output of an operation whose outcome is not known (singleton `UNKNOWN`)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""Output handed to a model's `step` for an indeterminate operation."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: what was asked, what came back, and when.

    `status`: `ok` completed with `output`; `fail` known not to have taken effect; `info`
    indeterminate (then `output` is meaningless and `ret` may be None).
    """

    client_id: int | str
    kind: str
    input: Any
    output: Any
    call: float
    ret: float | None
    status: Status = "ok"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"operation returns ({self.ret}) before its call ({self.call})")

    @property
    def indeterminate(self) -> bool:
        """True when the operation may or may not have taken effect."""
        return self.status == "info" or self.ret is None

    @property
    def effective_ret(self) -> float:
        """Return time for ordering: infinity for an indeterminate operation."""
        return math.inf if self.indeterminate or self.ret is None else self.ret

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {
            "client_id": self.client_id,
            "kind": self.kind,
            "input": self.input,
            "output": None if self.output is UNKNOWN else self.output,
            "call": self.call,
            "ret": self.ret,
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        """Inverse of `to_json`; lists are turned back into tuples so values stay hashable."""
        return cls(
            client_id=data["client_id"],
            kind=data["kind"],
            input=freeze(data.get("input")),
            output=freeze(data.get("output")),
            call=float(data["call"]),
            ret=None if data.get("ret") is None else float(data["ret"]),
            status=data.get("status", "ok"),
        )


def freeze(value: Any) -> Any:
    """Recursively turn lists into tuples and dicts into sorted item tuples (hashable)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


History = list[Operation]


@dataclass(slots=True)
class _Pending:
    client_id: int | str
    kind: str
    input: Any
    call: float


@dataclass(slots=True)
class Completion:
    """The handle `HistoryRecorder.operation` gives a block to say how it ended."""

    recorder: HistoryRecorder
    handle: int
    done: bool = False

    def ok(self, output: Any = None) -> None:
        """The operation completed with `output`."""
        self._finish("ok", output)

    def fail(self) -> None:
        """The operation definitely did not take effect."""
        self._finish("fail", None)

    def _finish(self, status: Status, output: Any) -> None:
        if self.done:
            raise RuntimeError("operation already completed")
        self.done = True
        self.recorder.complete(self.handle, status, output)


class HistoryRecorder:
    """Records operations as clients invoke and complete them.

    Safe to share between asyncio tasks (and threads): `invoke` returns a handle that the
    client passes to exactly one of `ok`, `fail` or `info` (or `complete`); `operation` wraps
    both around a block. Operations never completed appear as indeterminate in `history()`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0
        self._pending: dict[int, _Pending] = {}
        self._done: list[tuple[int, Operation]] = []

    def invoke(self, client_id: int | str, kind: str, input: Any = None) -> int:
        """Note the call of an operation now; returns its handle."""
        now = self._clock()
        with self._lock:
            handle = self._next
            self._next += 1
            self._pending[handle] = _Pending(client_id, kind, freeze(input), now)
        return handle

    def complete(self, handle: int, status: Status, output: Any = None) -> Operation:
        """Note the completion of `handle` now; `output` is kept only for `ok`."""
        now = self._clock()
        with self._lock:
            p = self._pending.pop(handle)
            if status == "ok":
                op = Operation(p.client_id, p.kind, p.input, freeze(output), p.call, now, "ok")
            else:
                ret = None if status == "info" else now
                op = Operation(p.client_id, p.kind, p.input, None, p.call, ret, status)
            self._done.append((handle, op))
        return op

    def ok(self, handle: int, output: Any = None) -> Operation:
        """The operation completed with `output`."""
        return self.complete(handle, "ok", output)

    def fail(self, handle: int) -> Operation:
        """The operation definitely did not take effect."""
        return self.complete(handle, "fail")

    def info(self, handle: int) -> Operation:
        """The outcome is unknown (timeout, lost connection): it may still take effect."""
        return self.complete(handle, "info")

    @contextmanager
    def operation(self, client_id: int | str, kind: str, input: Any = None) -> Iterator[Completion]:
        """Record one operation around a block (plain `with`, also inside coroutines).

        The block calls `ok(output)` or `fail()` on what it gets; if it calls neither, or
        raises, the operation is recorded as indeterminate (`info`) and any error propagates.
        """
        completion = Completion(self, self.invoke(client_id, kind, input))
        try:
            yield completion
        finally:
            if not completion.done:
                completion.done = True
                self.info(completion.handle)

    def history(self) -> History:
        """All operations in invocation order; pending ones as indeterminate."""
        with self._lock:
            items = list(self._done)
            items.extend(
                (h, Operation(p.client_id, p.kind, p.input, None, p.call, None, "info"))
                for h, p in self._pending.items()
            )
        items.sort(key=lambda item: item[0])
        return [op for _, op in items]


def write_jsonl(history: Iterable[Operation], dest: Path | str | TextIO) -> None:
    """Write one JSON object per operation."""
    if isinstance(dest, str | Path):
        with open(dest, "w", encoding="utf-8") as f:
            write_jsonl(history, f)
        return
    for op in history:
        dest.write(json.dumps(op.to_json(), separators=(",", ":")))
        dest.write("\n")


def iter_jsonl(source: Path | str | TextIO) -> Iterator[Operation]:
    """Yield the operations of a JSON-lines history (blank lines are skipped)."""
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as f:
            yield from iter_jsonl(f)
        return
    for lineno, line in enumerate(source, 1):
        if line.strip():
            try:
                yield Operation.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"line {lineno}: {exc}") from exc


def read_jsonl(source: Path | str | TextIO) -> History:
    """Read a JSON-lines history written by `write_jsonl`."""
    return list(iter_jsonl(source))
