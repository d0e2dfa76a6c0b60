"""Sequential specifications that histories are checked against.

A model is deterministic: `step(state, input, output)` says whether an operation with that
`input` may return `output` in `state`, and gives the state after it. `input` is the pair
`(operation kind, operation input)`. States must be hashable (the checker memoises them).
`output` is `UNKNOWN` for an indeterminate operation: every model accepts such an operation
in every state, so that it may equally be placed last or dropped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

from confman.verify.history import UNKNOWN, History, Operation

State = Hashable
Input = tuple[str, Any]


class Model(ABC):
    """A sequential specification of an object, for the linearizability checker."""

    name: str = "model"
    read_only_kinds: frozenset[str] = frozenset()
    """Kinds that never change the state: an indeterminate one is simply dropped."""

    @abstractmethod
    def init(self) -> State:
        """The initial state."""

    @abstractmethod
    def step(self, state: State, input: Input, output: Any) -> tuple[bool, State]:
        """(may `input` return `output` in `state`?, the state after it)."""

    def is_pure(self, input: Input, output: Any) -> bool:
        """True if an operation with this input and observed output leaves every state in
        which it is possible unchanged (a read; a compare-and-set that did not apply).

        The checker linearizes such an operation as soon as it is possible and never tries
        the alternatives, so a wrong True makes the checker unsound; False is always safe.
        """
        return input[0] in self.read_only_kinds and output is not UNKNOWN

    def partition(self, history: History) -> list[History]:
        """Independent sub-histories (P-compositionality); by default the whole history."""
        return [list(history)] if history else []

    def partition_key(self, history: History) -> Any:
        """A label for a partition produced by `partition` (None when unpartitioned)."""
        return None

    def describe_operation(self, op: Operation) -> str:
        """A short human-readable form such as `write(3)` or `read() -> 3`."""
        arg = "" if op.input is None else _args(op.input)
        text = f"{op.kind}({arg})"
        if op.indeterminate:
            return text + " -> ?"
        if op.status == "fail":
            return text + " -> failed"
        if op.output is None and op.kind not in self.read_only_kinds:
            return text
        return f"{text} -> {op.output!r}"

    def describe_state(self, state: State) -> str:
        """A short human-readable form of a state."""
        return repr(state)


def _args(value: Any) -> str:
    if isinstance(value, tuple):
        while len(value) > 1 and value[-1] is None:  # e.g. a get's (key, None)
            value = value[:-1]
        return ", ".join(repr(v) for v in value)
    return repr(value)


class RegisterModel(Model):
    """A single register: `read` (output: value), `write` (input: value) and `cas`.

    `cas` takes `(expected, new)`; output True if it applied, False if it did not because the
    current value differed. The register starts as None (never written).
    """

    name = "register"
    read_only_kinds = frozenset({"read"})

    def __init__(self, initial: Any = None) -> None:
        self.initial: State = initial

    def init(self) -> State:
        return self.initial

    def step(self, state: State, input: Input, output: Any) -> tuple[bool, State]:
        kind, arg = input
        if kind == "read":
            return (output is UNKNOWN or output == state), state
        if kind == "write":
            return True, arg
        if kind == "cas":
            expected, new = arg
            applies = state == expected
            if output is UNKNOWN:
                return True, (new if applies else state)
            if output:
                return applies, new
            return not applies, state
        raise ValueError(f"register: unknown operation kind {kind!r}")

    def is_pure(self, input: Input, output: Any) -> bool:
        return input[0] == "read" or (input[0] == "cas" and output is False)

    def describe_operation(self, op: Operation) -> str:
        if op.kind != "cas":
            return super().describe_operation(op)
        old, new = op.input
        if op.indeterminate:
            outcome = "?"
        elif op.status == "fail":
            outcome = "failed"
        else:
            outcome = "applied" if op.output else "value differed"
        return f"cas({old!r} -> {new!r}) -> {outcome}"


MapState = tuple[tuple[Any, Any], ...]
"""An immutable map: key-sorted (key, value) pairs (tiny once partitioned by key)."""


def map_get(state: MapState, key: Any, default: Any = None) -> Any:
    """The value of `key` in an immutable map state."""
    for k, v in state:
        if k == key:
            return v
    return default


def map_set(state: MapState, key: Any, value: Any) -> MapState:
    """A copy of `state` with `key` set to `value`."""
    if not state or (len(state) == 1 and state[0][0] == key):
        return ((key, value),)
    items = [(k, v) for k, v in state if k != key]
    items.append((key, value))
    items.sort(key=lambda kv: kv[0])
    return tuple(items)


def map_delete(state: MapState, key: Any) -> MapState:
    """A copy of `state` without `key`."""
    return tuple((k, v) for k, v in state if k != key)


class _KeyedModel(Model):
    """A map whose operations each name one key as `input[0]`: partitioned by key."""

    def init(self) -> State:
        return ()

    def partition(self, history: History) -> list[History]:
        groups: dict[Any, History] = {}
        for op in history:
            groups.setdefault(op.input[0], []).append(op)
        return list(groups.values())

    def partition_key(self, history: History) -> Any:
        return history[0].input[0] if history else None

    def describe_state(self, state: State) -> str:
        assert isinstance(state, tuple)
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in state) + "}"


class KeyValueModel(_KeyedModel):
    """String key-value map: `get` (input `(key, None)`, output the value, "" if absent),
    `put` (input `(key, value)`) and `append` (input `(key, suffix)`)."""

    name = "kv"
    read_only_kinds = frozenset({"get"})

    def step(  # type: ignore[override]  # the states of a map model are maps
        self, state: MapState, input: Input, output: Any
    ) -> tuple[bool, State]:
        kind, (key, value) = input
        current = map_get(state, key, "")
        if kind == "get":
            return (output is UNKNOWN or output == current), state
        if kind == "put":
            return True, map_set(state, key, value)
        if kind == "append":
            return True, map_set(state, key, current + value)
        raise ValueError(f"kv: unknown operation kind {kind!r}")


class VersionedMapModel(_KeyedModel):
    """Confman's configuration entries: a map of key -> (value, version).

    - `read` `(key,)` -> `(value, version)` or None when absent;
    - `write` `(key, value)` -> the new version (None: not recorded); versions start at 1
      and grow by one per change, a deleted and re-created key starts again at 1;
    - `cas` `(key, expected_version, value)` -> the new version (or True) if it applied,
      False if the current version differed; `expected_version` None means create-only;
    - `delete` `(key,)` -> True if the key existed (and is now gone), False if absent
      (None: not recorded).
    """

    name = "versioned-map"
    read_only_kinds = frozenset({"read"})

    def step(  # type: ignore[override]  # the states of a map model are maps
        self, state: MapState, input: Input, output: Any
    ) -> tuple[bool, State]:
        kind, arg = input
        key = arg[0]
        current = map_get(state, key)
        next_version = 1 if current is None else current[1] + 1
        if kind == "read":
            if output is UNKNOWN:
                return True, state
            if output is None or current is None:
                return output is None and current is None, state
            return isinstance(output, tuple | list) and tuple(output) == current, state
        if kind == "write":
            ok = output is UNKNOWN or output is None or output == next_version
            return ok, map_set(state, key, (arg[1], next_version))
        if kind == "cas":
            _, expected, value = arg
            if expected is None:
                applies = current is None
            else:
                applies = current is not None and current[1] == expected
            after = map_set(state, key, (value, next_version)) if applies else state
            if output is UNKNOWN:
                return True, after
            if output is False:
                return not applies, state
            ok = applies and (output is True or output == next_version)
            return ok, after
        if kind == "delete":
            after = state if current is None else map_delete(state, key)
            if output is UNKNOWN or output is None:
                return True, after
            return bool(output) == (current is not None), after
        raise ValueError(f"versioned-map: unknown operation kind {kind!r}")

    def is_pure(self, input: Input, output: Any) -> bool:
        kind = input[0]
        return (kind == "read" and output is not UNKNOWN) or (
            kind in ("cas", "delete") and output is False
        )
