"""Each model's sequential specification, one step at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confman.verify.history import UNKNOWN
from confman.verify.models import (
    KeyValueModel,
    Model,
    RegisterModel,
    VersionedMapModel,
    map_delete,
    map_get,
    map_set,
)
from tests.verify.helpers import info, ok

REG = RegisterModel()
KV = KeyValueModel()
VM = VersionedMapModel()


def run(model: Model, steps: list[tuple[str, object, object]]) -> list[bool]:
    """Apply (kind, input, output) steps in order, keeping the state after accepted ones."""
    state = model.init()
    verdicts = []
    for kind, arg, output in steps:
        possible, after = model.step(state, (kind, arg), output)
        verdicts.append(possible)
        if possible:
            state = after
    return verdicts


class TestRegister:
    def test_starts_empty(self) -> None:
        assert run(REG, [("read", None, None), ("read", None, 0)]) == [True, False]

    def test_read_sees_last_write(self) -> None:
        steps = [("write", None, None), ("write", 3, None), ("read", None, 3), ("read", None, 0)]
        assert run(REG, steps) == [True, True, True, False]

    def test_cas_applies_only_on_match(self) -> None:
        assert REG.step(1, ("cas", (1, 2)), True) == (True, 2)
        assert REG.step(5, ("cas", (1, 2)), True)[0] is False

    def test_cas_that_did_not_apply_means_value_differed(self) -> None:
        assert REG.step(5, ("cas", (1, 2)), False) == (True, 5)
        assert REG.step(1, ("cas", (1, 2)), False)[0] is False

    def test_unknown_outcome_is_possible_either_way(self) -> None:
        assert REG.step(1, ("cas", (1, 2)), UNKNOWN) == (True, 2)
        assert REG.step(5, ("cas", (1, 2)), UNKNOWN) == (True, 5)
        assert REG.step(5, ("write", 7), UNKNOWN) == (True, 7)

    def test_pure_operations(self) -> None:
        assert REG.is_pure(("read", None), 3)
        assert REG.is_pure(("cas", (1, 2)), False)
        assert not REG.is_pure(("cas", (1, 2)), True)
        assert not REG.is_pure(("cas", (1, 2)), UNKNOWN)
        assert not REG.is_pure(("write", 1), None)

    def test_one_partition_and_unknown_kind(self) -> None:
        history = [ok(1, "write", 1, None, 0, 1), ok(2, "read", None, 1, 2, 3)]
        assert REG.partition(history) == [history]
        assert REG.partition([]) == []
        with pytest.raises(ValueError, match="unknown operation kind"):
            REG.step(None, ("delete", None), None)

    def test_describe(self) -> None:
        assert REG.describe_operation(ok(1, "write", 3, None, 0, 1)) == "write(3)"
        assert REG.describe_operation(ok(1, "read", None, None, 0, 1)) == "read() -> None"
        assert REG.describe_operation(ok(1, "cas", (1, 2), False, 0, 1)) == (
            "cas(1 -> 2) -> value differed"
        )
        assert REG.describe_operation(info(1, "cas", (1, 2), 0)) == "cas(1 -> 2) -> ?"
        assert REG.describe_operation(info(1, "write", 4, 0)) == "write(4) -> ?"


class TestKeyValue:
    def test_absent_key_reads_empty(self) -> None:
        assert run(KV, [("get", ("k", None), ""), ("get", ("k", None), None)]) == [True, False]

    def test_put_replaces_and_append_concatenates(self) -> None:
        steps = [
            ("append", ("k", "a"), None),
            ("append", ("k", "b"), None),
            ("get", ("k", None), "ab"),
            ("get", ("k", None), "b"),
            ("put", ("k", "z"), None),
            ("append", ("k", "y"), None),
            ("get", ("k", None), "zy"),
            ("get", ("other", None), ""),
        ]
        assert run(KV, steps) == [True, True, True, False, True, True, True, True]

    def test_keys_are_independent_without_partitioning(self) -> None:
        state = KV.init()
        for key, value in [("b", "1"), ("a", "2"), ("b", "3")]:
            _, state = KV.step(state, ("append", (key, value)), None)
        assert state == (("a", "2"), ("b", "13"))
        assert KV.describe_state(state) == "{'a': '2', 'b': '13'}"

    def test_partition_by_key_keeps_order(self) -> None:
        a1 = ok(1, "put", ("a", "1"), None, 0, 1)
        b1 = ok(2, "get", ("b", None), "", 0, 1)
        a2 = ok(3, "get", ("a", None), "1", 2, 3)
        parts = KV.partition([a1, b1, a2])
        assert parts == [[a1, a2], [b1]]
        assert [KV.partition_key(p) for p in parts] == ["a", "b"]

    def test_unknown_kind(self) -> None:
        with pytest.raises(ValueError, match="unknown operation kind"):
            KV.step((), ("delete", ("k", None)), None)

    def test_describe(self) -> None:
        assert KV.describe_operation(ok(1, "get", ("k", None), "x", 0, 1)) == "get('k') -> 'x'"
        assert KV.describe_operation(ok(1, "put", ("k", "v"), None, 0, 1)) == "put('k', 'v')"


class TestVersionedMap:
    def test_versions_grow_by_one_per_change(self) -> None:
        steps = [
            ("read", ("k",), None),
            ("write", ("k", "a"), 1),
            ("write", ("k", "b"), 2),
            ("read", ("k",), ("b", 2)),
            ("read", ("k",), ("a", 1)),
            ("write", ("k", "c"), 2),  # the version must be 3 now
        ]
        assert run(VM, steps) == [True, True, True, True, False, False]

    def test_unrecorded_or_unknown_write_version(self) -> None:
        assert run(VM, [("write", ("k", "a"), None), ("read", ("k",), ("a", 1))]) == [True] * 2
        assert VM.step((), ("write", ("k", "a")), UNKNOWN) == (True, (("k", ("a", 1)),))

    def test_delete_then_recreate_starts_again_at_one(self) -> None:
        steps = [
            ("delete", ("k",), False),
            ("write", ("k", "a"), 1),
            ("write", ("k", "b"), 2),
            ("delete", ("k",), True),
            ("read", ("k",), None),
            ("delete", ("k",), True),  # already gone
            ("write", ("k", "c"), 1),
        ]
        assert run(VM, steps) == [True, True, True, True, True, False, True]

    def test_cas_by_expected_version(self) -> None:
        steps = [
            ("cas", ("k", 1, "x"), 1),  # absent: version 1 expected but not there
            ("cas", ("k", 1, "x"), False),
            ("cas", ("k", None, "a"), 1),  # create-only
            ("cas", ("k", None, "b"), False),  # exists now
            ("cas", ("k", 1, "c"), True),
            ("read", ("k",), ("c", 2)),
            ("cas", ("k", 1, "d"), False),
            ("cas", ("k", 2, "d"), 4),  # applies, but the new version is 3
        ]
        assert run(VM, steps) == [False, True, True, True, True, True, True, False]

    def test_cas_unknown_outcome(self) -> None:
        state = (("k", ("a", 1)),)
        assert VM.step(state, ("cas", ("k", 1, "b")), UNKNOWN) == (True, (("k", ("b", 2)),))
        assert VM.step(state, ("cas", ("k", 7, "b")), UNKNOWN) == (True, state)

    def test_read_accepts_list_output_from_json(self) -> None:
        assert VM.step((("k", ("a", 1)),), ("read", ("k",)), ["a", 1])[0]

    def test_pure_operations(self) -> None:
        assert VM.is_pure(("read", ("k",)), None)
        assert VM.is_pure(("cas", ("k", 1, "x")), False)
        assert VM.is_pure(("delete", ("k",)), False)
        assert not VM.is_pure(("delete", ("k",)), True)
        assert not VM.is_pure(("read", ("k",)), UNKNOWN)

    def test_describe(self) -> None:
        cas = ok(1, "cas", ("k", None, "v"), 1, 0, 1)
        assert VM.describe_operation(cas) == "cas('k', None, 'v') -> 1"
        assert VM.describe_state((("k", ("v", 1)),)) == "{'k': ('v', 1)}"

    def test_partition_by_key(self) -> None:
        a = ok(1, "write", ("a", "1"), 1, 0, 1)
        b = ok(2, "delete", ("b",), False, 0, 1)
        assert VM.partition([a, b]) == [[a], [b]]

    def test_unknown_kind(self) -> None:
        with pytest.raises(ValueError, match="unknown operation kind"):
            VM.step((), ("append", ("k", "x")), None)


def test_map_helpers() -> None:
    state = map_set(map_set((), "b", 1), "a", 2)
    assert state == (("a", 2), ("b", 1))
    assert map_get(state, "a") == 2
    assert map_get(state, "zz", "dflt") == "dflt"
    assert map_set(state, "b", 5) == (("a", 2), ("b", 5))
    assert map_delete(state, "a") == (("b", 1),)


# Every model must accept an operation of unknown outcome in every state: the checker relies
# on it to place indeterminate operations last (the same as never).
_values = st.integers(0, 3)
_keys = st.sampled_from("ab")
_register_states = st.none() | _values
_register_inputs = st.one_of(
    st.tuples(st.just("write"), _values), st.tuples(st.just("cas"), st.tuples(_values, _values))
)


def _as_map(d: dict[str, object]) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(d.items()))


_kv_states = st.dictionaries(_keys, st.text("xy", max_size=3)).map(_as_map)
_kv_inputs = st.tuples(st.sampled_from(["put", "append"]), st.tuples(_keys, st.text("xy")))
_vm_states = st.dictionaries(_keys, st.tuples(st.text("xy"), st.integers(1, 4))).map(_as_map)
_vm_inputs = st.one_of(
    st.tuples(st.just("write"), st.tuples(_keys, st.text("xy"))),
    st.tuples(st.just("cas"), st.tuples(_keys, st.none() | st.integers(1, 4), st.text("xy"))),
    st.tuples(st.just("delete"), st.tuples(_keys)),
)


@settings(derandomize=True, max_examples=150)
@given(
    st.one_of(
        st.tuples(st.just(REG), _register_states, _register_inputs),
        st.tuples(st.just(KV), _kv_states, _kv_inputs),
        st.tuples(st.just(VM), _vm_states, _vm_inputs),
    )
)
def test_unknown_outcome_possible_in_every_state(case: tuple[Model, object, object]) -> None:
    model, state, call = case
    possible, after = model.step(state, call, UNKNOWN)  # type: ignore[arg-type]
    assert possible
    hash(after)
