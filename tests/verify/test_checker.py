"""Tiny hand-made histories: each way a history can be (or fail to be) linearizable."""

from __future__ import annotations

import pytest

from confman.verify.checker import CheckResult, check, prepare
from confman.verify.history import Operation
from confman.verify.models import KeyValueModel, Model, RegisterModel, VersionedMapModel
from tests.verify.helpers import assert_valid_witness, failed, info, ok

REG = RegisterModel()
KV = KeyValueModel()
VM = VersionedMapModel()


def verdict(history: list[Operation], model: Model = REG) -> CheckResult:
    """Check, and validate the witness order of every linearizable partition."""
    result = check(history, model, timeout=10.0)
    for part in result.partitions:
        if part.verdict == "linearizable":
            assert part.linearization is not None
            assert_valid_witness(model, _ops_of(model, history, part.key), part.linearization)
        else:
            assert part.linearization is None
    return result


def _ops_of(model: Model, history: list[Operation], key: object) -> list[Operation]:
    for part in model.partition(history):
        if model.partition_key(part) == key:
            return part
    raise AssertionError(f"no partition {key!r}")


class TestLinearizable:
    def test_empty_history(self) -> None:
        result = verdict([])
        assert result.verdict == "linearizable"
        assert result.partitions == []

    def test_sequential_history(self) -> None:
        history = [
            ok(1, "write", 1, None, 0, 1),
            ok(2, "read", None, 1, 2, 3),
            ok(1, "cas", (1, 2), True, 4, 5),
            ok(2, "cas", (1, 3), False, 6, 7),
            ok(3, "read", None, 2, 8, 9),
        ]
        assert verdict(history).verdict == "linearizable"

    def test_overlapping_read_may_see_old_or_new_value(self) -> None:
        for seen in (None, 1):
            history = [ok(1, "write", 1, None, 0, 10), ok(2, "read", None, seen, 2, 3)]
            assert verdict(history).verdict == "linearizable"

    def test_reads_order_concurrent_writes(self) -> None:
        # write(2) must have come after write(1): the last read settles it.
        history = [
            ok(1, "write", 1, None, 0, 10),
            ok(2, "write", 2, None, 0, 10),
            ok(3, "read", None, 1, 1, 2),
            ok(3, "read", None, 2, 11, 12),
        ]
        assert verdict(history).verdict == "linearizable"

    def test_touching_intervals_count_as_concurrent(self) -> None:
        history = [ok(1, "write", 1, None, 0, 5), ok(2, "read", None, None, 5, 6)]
        assert verdict(history).verdict == "linearizable"


class TestIndeterminate:
    def test_may_take_effect_long_after_its_call(self) -> None:
        history = [
            info(1, "write", 1, 0),
            ok(2, "read", None, None, 10, 11),
            ok(2, "read", None, 1, 20, 21),
        ]
        assert verdict(history).verdict == "linearizable"

    def test_may_never_take_effect(self) -> None:
        history = [info(1, "write", 1, 0), ok(2, "read", None, None, 10, 11)]
        result = verdict(history)
        assert result.verdict == "linearizable"
        assert result.partitions[0].linearization == [history[1]]

    def test_cannot_take_effect_before_its_call(self) -> None:
        history = [ok(2, "read", None, 1, 0, 1), info(1, "write", 1, 2)]
        assert verdict(history).verdict == "not_linearizable"

    def test_takes_effect_at_most_once(self) -> None:
        history = [
            info(1, "write", 1, 0),
            ok(2, "read", None, 1, 1, 2),
            ok(2, "write", 2, None, 3, 4),
            ok(2, "read", None, 1, 5, 6),
        ]
        assert verdict(history).verdict == "not_linearizable"

    def test_unknown_cas_may_have_applied_or_not(self) -> None:
        base = [ok(1, "write", 1, None, 0, 1), info(2, "cas", (1, 5), 2)]
        for seen in (1, 5):
            assert verdict([*base, ok(3, "read", None, seen, 10, 11)]).verdict == "linearizable"
        assert verdict([*base, ok(3, "read", None, 7, 10, 11)]).verdict == "not_linearizable"

    def test_completed_with_status_ok_but_no_return_is_indeterminate(self) -> None:
        op = Operation(1, "write", 1, None, 0, None, "ok")
        assert op.indeterminate
        assert verdict([op, ok(2, "read", None, 1, 5, 6)]).verdict == "linearizable"

    def test_indeterminate_and_failed_reads_are_dropped(self) -> None:
        history = [
            info(1, "read", None, 0),
            failed(2, "read", None, 0, 1),
            ok(3, "read", None, None, 2, 3),
        ]
        assert prepare(REG, history) == [history[2]]
        result = verdict(history)
        assert result.verdict == "linearizable"
        assert result.partitions[0].operations == 1

    def test_many_indeterminate_operations_that_change_nothing(self) -> None:
        # 2^24 subsets of these could be linearized; none changes the register, so the
        # search must not try them, and the stale read is found at once.
        history = [ok(0, "write", 1, None, 0, 1)]
        history += [info(c, "cas", (9, c), 2 + c) for c in range(1, 25)]
        history += [ok(0, "write", 2, None, 30, 31), ok(0, "read", None, 1, 32, 33)]
        result = check(history, REG, timeout=10.0)
        assert result.verdict == "not_linearizable"
        assert "read() -> 1 [32, 33] must take effect by 33" in result.details


class TestFailedOperations:
    def test_failed_write_did_not_happen(self) -> None:
        history = [failed(1, "write", 1, 0, 1), ok(2, "read", None, 1, 2, 3)]
        result = verdict(history)
        assert result.verdict == "not_linearizable"
        assert "read() -> 1 [2, 3]" in result.details

    def test_failed_write_is_ignored(self) -> None:
        history = [failed(1, "write", 1, 0, 1), ok(2, "read", None, None, 2, 3)]
        assert verdict(history).verdict == "linearizable"


class TestViolations:
    """Each reason a history is not linearizable, and what the explanation says."""

    def test_stale_read(self) -> None:
        history = [ok(1, "write", 1, None, 0, 1), ok(2, "read", None, None, 2, 3)]
        result = verdict(history)
        assert result.verdict == "not_linearizable"
        assert "client 2 read() -> None [2, 3] must take effect by 3" in result.details
        assert "impossible in state 1" in result.details
        assert "1. client 1 write(1) [0, 1]" in result.details

    def test_read_of_a_value_never_written(self) -> None:
        history = [ok(1, "write", 1, None, 0, 10), ok(2, "read", None, 7, 2, 3)]
        result = verdict(history)
        assert result.verdict == "not_linearizable"
        assert "read() -> 7 [2, 3]" in result.details

    def test_real_time_order_of_writes(self) -> None:
        history = [
            ok(1, "write", 1, None, 0, 1),
            ok(1, "write", 2, None, 2, 3),
            ok(2, "read", None, 1, 4, 5),
        ]
        result = verdict(history)
        assert result.verdict == "not_linearizable"
        assert "has 2 of 3 operations" in result.details

    def test_reads_disagree_on_order(self) -> None:
        # Two concurrent writes; one reader sees 1 then 2, another, later, 2 then 1.
        history = [
            ok(1, "write", 1, None, 0, 10),
            ok(2, "write", 2, None, 0, 10),
            ok(3, "read", None, 1, 1, 2),
            ok(3, "read", None, 2, 3, 4),
            ok(4, "read", None, 1, 5, 6),
        ]
        assert verdict(history).verdict == "not_linearizable"

    def test_cas_applied_although_value_differed(self) -> None:
        history = [ok(1, "write", 1, None, 0, 1), ok(2, "cas", (3, 4), True, 2, 3)]
        result = verdict(history)
        assert result.verdict == "not_linearizable"
        assert "cas(3 -> 4) -> applied [2, 3]: impossible in state 1" in result.details

    def test_cas_did_not_apply_although_value_matched(self) -> None:
        history = [ok(1, "write", 1, None, 0, 1), ok(2, "cas", (1, 4), False, 2, 3)]
        assert verdict(history).verdict == "not_linearizable"

    def test_explanation_lists_every_candidate(self) -> None:
        history = [
            ok(1, "write", 1, None, 0, 1),
            ok(2, "read", None, 8, 2, 20),
            ok(3, "read", None, 9, 3, 4),
        ]
        result = verdict(history)
        assert "client 3 read() -> 9 [3, 4] must take effect by 4" in result.details
        assert "client 2 read() -> 8 [2, 20]: impossible in state 1" in result.details
        assert "client 3 read() -> 9 [3, 4]: impossible in state 1" in result.details

    def test_lost_append(self) -> None:
        history = [
            ok(1, "append", ("k", "a"), None, 0, 1),
            ok(2, "append", ("k", "b"), None, 2, 3),
            ok(3, "get", ("k", None), "b", 4, 5),
        ]
        result = verdict(history, KV)
        assert result.verdict == "not_linearizable"
        assert "for key 'k'" in result.details

    def test_version_reused(self) -> None:
        history = [
            ok(1, "write", ("k", "a"), 1, 0, 1),
            ok(2, "write", ("k", "b"), 1, 2, 3),
        ]
        result = verdict(history, VM)
        assert result.verdict == "not_linearizable"
        assert "write('k', 'b') -> 1 [2, 3]: impossible" in result.details

    def test_delete_of_present_key_reported_absent(self) -> None:
        history = [ok(1, "write", ("k", "a"), 1, 0, 1), ok(2, "delete", ("k",), False, 2, 3)]
        assert verdict(history, VM).verdict == "not_linearizable"

    def test_read_after_delete(self) -> None:
        history = [
            ok(1, "write", ("k", "a"), 1, 0, 1),
            ok(1, "delete", ("k",), True, 2, 3),
            ok(2, "read", ("k",), ("a", 1), 4, 5),
        ]
        assert verdict(history, VM).verdict == "not_linearizable"


class TestPartitions:
    def history(self) -> list[Operation]:
        return [
            ok(1, "put", ("good", "x"), None, 0, 1),
            ok(2, "get", ("good", None), "x", 2, 3),
            ok(1, "put", ("bad", "x"), None, 0, 1),
            ok(2, "get", ("bad", None), "", 2, 3),
            ok(1, "put", ("bad2", "y"), None, 0, 1),
            ok(2, "get", ("bad2", None), "", 2, 3),
        ]

    def test_each_key_checked_on_its_own(self) -> None:
        result = check(self.history(), KV, timeout=10.0, exhaustive=True)
        assert result.verdict == "not_linearizable"
        verdicts = {p.key: p.verdict for p in result.partitions}
        assert verdicts == {
            "good": "linearizable",
            "bad": "not_linearizable",
            "bad2": "not_linearizable",
        }
        assert "for key 'bad'" in result.details
        assert "for key 'bad2'" in result.details

    def test_stops_at_first_failing_partition(self) -> None:
        result = check(self.history(), KV, timeout=10.0)
        assert result.verdict == "not_linearizable"
        assert [p.verdict for p in result.partitions].count("not_linearizable") == 1
        assert "not searched to the end" in result.details


def hard_history(writers: int) -> list[Operation]:
    """Many concurrent writes, then a read of a value none of them wrote: every order of
    every subset of writes is a distinct state, so the search cannot finish quickly."""
    writes = [ok(c, "write", c, None, 0, 100) for c in range(writers)]
    return [*writes, ok(writers, "read", None, -1, 200, 201)]


class TestTimeLimit:
    def test_unknown_when_time_runs_out(self) -> None:
        result = check(hard_history(24), REG, timeout=0.3)
        assert result.verdict == "unknown"
        assert result.partitions[0].verdict == "unknown"
        assert result.partitions[0].states_explored > 0
        assert "time limit (0.3 s) reached" in result.details
        assert "undecided (time limit reached, " in result.details
        assert result.elapsed < 5.0

    def test_same_kind_of_history_decided_when_small(self) -> None:
        assert check(hard_history(4), REG, timeout=10.0).verdict == "not_linearizable"

    def test_zero_timeout(self) -> None:
        assert check([ok(1, "write", 1, None, 0, 1)], REG, timeout=0).verdict == "unknown"

    @pytest.mark.parametrize("limit", [None, 10.0])
    def test_no_or_ample_limit(self, limit: float | None) -> None:
        history = [ok(1, "write", 1, None, 0, 1), ok(2, "read", None, 1, 2, 3)]
        assert check(history, REG, timeout=limit).verdict == "linearizable"
