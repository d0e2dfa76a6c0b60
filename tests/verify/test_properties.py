"""Property tests: histories of real sequential executions are linearizable, a read of a value
nobody wrote is not, and on tiny random histories the checker agrees with brute force."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from confman.verify.checker import check
from confman.verify.history import Operation
from confman.verify.models import KeyValueModel, Model, RegisterModel, VersionedMapModel
from tests.verify.helpers import assert_valid_witness, brute_force_linearizable

SETTINGS = settings(derandomize=True, max_examples=200, deadline=None)


# --- reference implementations: plain dict/variable code, independent of models.py ---------


def run_register(state: Any, kind: str, arg: Any) -> tuple[Any, Any]:
    """(output, new state) of one register operation."""
    if kind == "read":
        return state, state
    if kind == "write":
        return None, arg
    applies = state == arg[0]
    return applies, (arg[1] if applies else state)


def run_kv(state: dict[str, str], kind: str, arg: Any) -> tuple[Any, dict[str, str]]:
    key, value = arg
    if kind == "get":
        return state.get(key, ""), state
    new = dict(state)
    new[key] = value if kind == "put" else state.get(key, "") + value
    return None, new


def run_versioned(state: dict[str, tuple[str, int]], kind: str, arg: Any) -> tuple[Any, Any]:
    key = arg[0]
    current = state.get(key)
    new = dict(state)
    version = 1 if current is None else current[1] + 1
    if kind == "read":
        return current, state
    if kind == "write":
        new[key] = (arg[1], version)
        return version, new
    if kind == "delete":
        new.pop(key, None)
        return current is not None, new
    expected = arg[1]
    if (current is None and expected is None) or (current and current[1] == expected):
        new[key] = (arg[2], version)
        return version, new
    return False, state


@dataclass(frozen=True)
class Spec:
    model: Model
    run: Any
    initial: Any
    calls: st.SearchStrategy[tuple[str, Any]]
    read_kind: str
    unwritten: Any
    """A read output that no write can produce."""


_values = st.integers(0, 3)
_keys = st.sampled_from(["a", "b"])
_text = st.sampled_from(["x", "y", "xy"])
SPECS = [
    Spec(
        RegisterModel(),
        run_register,
        None,
        st.one_of(
            st.tuples(st.just("read"), st.none()),
            st.tuples(st.just("write"), _values),
            st.tuples(st.just("cas"), st.tuples(_values, _values)),
        ),
        "read",
        99,
    ),
    Spec(
        KeyValueModel(),
        run_kv,
        {},
        st.one_of(
            st.tuples(st.just("get"), st.tuples(_keys, st.none())),
            st.tuples(st.sampled_from(["put", "append"]), st.tuples(_keys, _text)),
        ),
        "get",
        "#",
    ),
    Spec(
        VersionedMapModel(),
        run_versioned,
        {},
        st.one_of(
            st.tuples(st.just("read"), st.tuples(_keys)),
            st.tuples(st.just("write"), st.tuples(_keys, _text)),
            st.tuples(st.just("cas"), st.tuples(_keys, st.none() | st.integers(1, 3), _text)),
            st.tuples(st.just("delete"), st.tuples(_keys)),
        ),
        "read",
        ("#", 1),
    ),
]


@st.composite
def executions(draw: st.DrawFn) -> tuple[Spec, list[Operation]]:
    """A sequential execution, each operation given an interval around its moment (spaced 10
    apart) up to 25 either side, some made indeterminate, plus operations that never took
    effect: failed ones and indeterminate ones."""
    spec = draw(st.sampled_from(SPECS))
    state = spec.initial
    history = []
    calls = draw(st.lists(spec.calls, min_size=1, max_size=24))
    for i, (kind, arg) in enumerate(calls):
        moment = 10 * i + 30
        output, state = spec.run(state, kind, arg)
        call = moment - draw(st.integers(0, 25))
        ret = moment + draw(st.integers(0, 25))
        if draw(st.integers(0, 9)) == 0:
            history.append(Operation(i, kind, arg, None, call, None, "info"))
        else:
            history.append(Operation(i, kind, arg, output, call, ret, "ok"))
    end = 10 * len(calls) + 60
    for j, (kind, arg) in enumerate(draw(st.lists(spec.calls, max_size=3))):
        call = draw(st.integers(0, end))
        status = draw(st.sampled_from(["fail", "info"]))
        ret = call + draw(st.integers(0, 25)) if status == "fail" else None
        history.append(Operation(f"x{j}", kind, arg, None, call, ret, status))
    order = draw(st.permutations(range(len(history))))
    return spec, [history[k] for k in order]


@SETTINGS
@given(executions())
def test_histories_of_sequential_executions_are_linearizable(
    case: tuple[Spec, list[Operation]],
) -> None:
    spec, history = case
    result = check(history, spec.model, timeout=10.0)
    assert result.verdict == "linearizable", result.details
    for part in result.partitions:
        ops = [op for op in history if spec.model.partition_key([op]) == part.key]
        assert_valid_witness(spec.model, ops, part.linearization or [])


@SETTINGS
@given(executions(), st.data())
def test_a_read_of_a_value_never_written_is_caught(
    case: tuple[Spec, list[Operation]], data: st.DataObject
) -> None:
    spec, history = case
    reads = [
        k
        for k, op in enumerate(history)
        if op.kind == spec.read_kind and op.status == "ok" and not op.indeterminate
    ]
    assume(reads)
    k = data.draw(st.sampled_from(reads))
    op = history[k]
    history[k] = Operation(op.client_id, op.kind, op.input, spec.unwritten, op.call, op.ret)
    result = check(history, spec.model, timeout=10.0)
    assert result.verdict == "not_linearizable"
    assert f"-> {spec.unwritten!r}" in result.details


@st.composite
def tiny_histories(draw: st.DrawFn) -> tuple[Spec, list[Operation]]:
    """Up to 6 operations with arbitrary outputs and intervals: often not linearizable."""
    spec = draw(st.sampled_from(SPECS))
    outputs = {
        "register": st.none() | _values | st.booleans(),
        "kv": st.sampled_from(["", "x", "y", "xy", "yx"]),
        "versioned-map": st.none()
        | st.booleans()
        | st.integers(1, 3)
        | st.tuples(_text, st.integers(1, 3)),
    }[spec.model.name]
    history = []
    for i in range(draw(st.integers(1, 6))):
        kind, arg = draw(spec.calls)
        call = draw(st.integers(0, 20))
        ret = call + draw(st.integers(0, 10))
        status = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        output = draw(outputs) if status == "ok" else None
        history.append(Operation(i, kind, arg, output, call, None if status == "info" else ret))
        if status != "ok":
            history[-1] = Operation(i, kind, arg, None, call, history[-1].ret, status)
    return spec, history


@settings(derandomize=True, max_examples=400, deadline=None)
@given(tiny_histories())
def test_agrees_with_brute_force_on_tiny_histories(case: tuple[Spec, list[Operation]]) -> None:
    spec, history = case
    model = spec.model
    expected = all(brute_force_linearizable(model, part) for part in model.partition(history))
    result = check(history, spec.model, timeout=10.0)
    assert result.verdict == ("linearizable" if expected else "not_linearizable"), history
