"""Shorthands for hand-made histories and an exhaustive reference checker for tiny ones."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from confman.verify.checker import prepare
from confman.verify.history import UNKNOWN, Operation
from confman.verify.models import Model

# Third-party histories with known verdicts, vendored with their licence (see its README).
TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "linearizability"


def ok(client: int, kind: str, input: Any, output: Any, call: float, ret: float) -> Operation:
    """A completed operation."""
    return Operation(client, kind, input, output, call, ret, "ok")


def info(client: int, kind: str, input: Any, call: float) -> Operation:
    """An operation whose outcome is unknown."""
    return Operation(client, kind, input, None, call, None, "info")


def failed(client: int, kind: str, input: Any, call: float, ret: float) -> Operation:
    """An operation known not to have taken effect."""
    return Operation(client, kind, input, None, call, ret, "fail")


def brute_force_linearizable(model: Model, history: Sequence[Operation]) -> bool:
    """Does some subset of the indeterminate operations, together with every completed one,
    have a sequential order that respects real time and the model? Exponential: for a
    handful of operations only. Shares no code with the checker's search."""
    ops = prepare(model, history)
    sure = [op for op in ops if not op.indeterminate]
    maybe = [op for op in ops if op.indeterminate]
    for k in range(len(maybe) + 1):
        for chosen in combinations(maybe, k):
            if _some_order(model, sure + list(chosen)):
                return True
    return False


def _some_order(model: Model, ops: list[Operation]) -> bool:
    def precedes(a: Operation, b: Operation) -> bool:
        return a.ret is not None and not a.indeterminate and a.ret < b.call

    def extend(state: Any, left: list[Operation]) -> bool:
        if not left:
            return True
        for op in left:
            if any(precedes(other, op) for other in left if other is not op):
                continue  # something still pending had to come before op
            output = UNKNOWN if op.indeterminate else op.output
            possible, after = model.step(state, (op.kind, op.input), output)
            if possible and extend(after, [o for o in left if o is not op]):
                return True
        return False

    return extend(model.init(), ops)


def assert_valid_witness(model: Model, history: Sequence[Operation], order: list[Operation]):
    """`order` contains every completed operation once, respects real time and the model."""
    completed = [op for op in prepare(model, history) if not op.indeterminate]
    assert sorted(map(id, completed)) == sorted(id(op) for op in order if not op.indeterminate)
    assert len({id(op) for op in order}) == len(order)
    position = {id(op): k for k, op in enumerate(order)}
    for a in order:
        for b in order:
            if not a.indeterminate and a.ret is not None and a.ret < b.call:
                assert position[id(a)] < position[id(b)], (a, b)
    state = model.init()
    for op in order:
        output = UNKNOWN if op.indeterminate else op.output
        possible, state = model.step(state, (op.kind, op.input), output)
        assert possible, (op, state)
