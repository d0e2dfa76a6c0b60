"""Property: however a log is cut into batches and restarts, apply gives the same state.

Random command sequences are applied in one batch, one entry at a time, and in random
batches with a restart in the middle; digests and results must be identical, and the
statuses and final entries must match a small in-memory model of the semantics.
"""

from __future__ import annotations

import copy
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confman.node.state.commands import (
    Batch,
    Command,
    CompactHistory,
    DeleteConfig,
    DeleteNamespace,
    PutConfig,
    PutNamespace,
    timestamp_micros,
)
from confman.node.state.machine import ApplyResult, StateMachine
from tests.state.logbuilder import Log, entry_rows, ts

names = st.sampled_from(["a", "b", "a/x"])
keys = st.sampled_from(["k1", "k2", "k3"])
versions = st.sampled_from([None, None, None, 0, 1, 2, 3])
put_config = st.builds(
    PutConfig,
    names,
    keys,
    st.text("xyz", max_size=3),
    st.sampled_from(["string", "json"]),
    versions,
    st.sampled_from([False, False, False, True]),
    st.sampled_from([False, False, False, True]),
)
by_kind = {
    "put": put_config,
    "delete": st.builds(DeleteConfig, names, keys, versions, st.booleans()),
    "namespace": st.builds(
        PutNamespace, names, st.none() | st.just("desc"), st.none() | st.just("me")
    ),
    "drop": st.builds(DeleteNamespace, names),
}
simple = st.sampled_from(["put"] * 5 + ["delete"] * 2 + ["namespace", "drop"]).flatmap(
    by_kind.__getitem__
)
commands = simple | st.builds(Batch, st.lists(simple, max_size=4).map(tuple))
requests = st.tuples(
    commands,
    st.sampled_from(["alice", "bob"]),
    st.integers(0, 12),  # seconds since the previous request
    st.none() | st.sampled_from(["i1", "i2", "i3"]),
    st.sampled_from([0, 5, 10, 30]),
)
compactions = st.tuples(st.just("compact"), st.integers(0, 30))
steps = st.one_of(requests, requests, requests, st.just("noop"), st.just("garbage"), compactions)
#: Every plan starts by creating two of the namespaces, so that most commands can succeed.
PROLOGUE = [(PutNamespace(name), "root", 0, None, 0) for name in ("a", "b")]


def build_log(plan: list[object]) -> Log:
    log = Log()
    clock = 0
    for step in plan:
        if step == "noop":
            log.noop()
        elif step == "garbage":
            log.raw(b"\xc1\x00junk")
        elif step[0] == "compact":  # type: ignore[index]
            log.add(CompactHistory(step[1]), actor="root", at=clock)  # type: ignore[index]
        else:
            cmd, actor, gap, key, ttl = step  # type: ignore[misc]
            clock += gap
            log.add(cmd, actor=actor, at=clock, key=key, ttl=ttl)
    return log


@dataclass
class Model:
    """The intended semantics, as plainly as possible."""

    namespaces: set[str] = field(default_factory=set)
    entries: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    idem: dict[str, tuple[tuple[str, Command], str, int]] = field(default_factory=dict)

    def request(self, cmd: Command, actor: str, when: str, key: str | None, ttl: int) -> str:
        now = timestamp_micros(when)
        self.idem = {k: v for k, v in self.idem.items() if v[2] > now}
        if key is not None and key in self.idem:
            fingerprint, status, _ = self.idem[key]
            return f"retry:{status}" if fingerprint == (actor, cmd) else "key_reused"
        status = self.run(cmd)
        if key is not None and ttl > 0:
            self.idem[key] = ((actor, cmd), status, now + ttl * 1_000_000)
        return status

    def run(self, cmd: Command) -> str:
        if isinstance(cmd, Batch):
            if not cmd.commands:
                return "noop"
            saved = copy.deepcopy((self.namespaces, self.entries))
            for member in cmd.commands:
                status = self.run(member)
                if status in ("not_found", "precondition_failed"):
                    self.namespaces, self.entries = saved
                    return status
            return "applied"
        if isinstance(cmd, PutNamespace):
            created = cmd.path not in self.namespaces
            self.namespaces.add(cmd.path)
            return "created" if created else "updated"
        if isinstance(cmd, DeleteNamespace):
            if cmd.path not in self.namespaces:
                return "not_found"
            self.namespaces.discard(cmd.path)
            self.entries = {k: v for k, v in self.entries.items() if k[0] != cmd.path}
            return "deleted"
        if cmd.namespace not in self.namespaces:
            return "not_found"
        current = self.entries.get((cmd.namespace, cmd.key))
        if isinstance(cmd, PutConfig) and cmd.create_only and current is not None:
            return "precondition_failed"
        if cmd.must_exist and current is None:
            return "precondition_failed"
        if cmd.expected_version is not None and (
            current is None or current[1] != cmd.expected_version
        ):
            return "precondition_failed"
        if isinstance(cmd, DeleteConfig):
            if current is None:
                return "not_found"
            del self.entries[(cmd.namespace, cmd.key)]
            return "deleted"
        self.entries[(cmd.namespace, cmd.key)] = (
            cmd.value,
            1 if current is None else current[1] + 1,
        )
        return "created" if current is None else "updated"


def model_statuses(plan: list[object]) -> tuple[list[str], Model]:
    model = Model()
    out = []
    clock = 0
    floor = 0
    for index, step in enumerate(plan, start=1):
        if step == "noop":
            out.append("noop")
        elif step == "garbage":
            out.append("rejected")
        elif step[0] == "compact":  # type: ignore[index]
            through = min(step[1], index - 1)  # type: ignore[index]
            out.append("compacted" if through > floor else "noop")
            floor = max(floor, through)
        else:
            cmd, actor, gap, key, ttl = step  # type: ignore[misc]
            clock += gap
            out.append(model.request(cmd, actor, ts(clock), key, ttl))
    return out, model


def apply_in(
    path: Path, log: Log, cuts: list[int], restart_at: int | None
) -> tuple[list[ApplyResult], str, list[tuple[object, ...]]]:
    results: list[ApplyResult] = []
    machine = StateMachine(path)
    try:
        for lo, hi in zip([0, *cuts], [*cuts, len(log.entries)], strict=True):
            if restart_at is not None and lo == restart_at:
                machine.close()
                machine = StateMachine(path)
            results += machine.apply(log.entries[lo:hi], log.conf_states)
        return results, machine.state_digest(), entry_rows(machine)
    finally:
        machine.close()


def check_plan(plan: list[object], cuts: list[int], restart_at: int) -> None:
    """Apply ``plan`` three ways; all must agree with each other and with the model."""
    log = build_log(plan)
    n = len(log.entries)
    with tempfile.TemporaryDirectory(prefix="state-prop-") as tmp:
        one_batch = apply_in(Path(tmp) / "one.db", log, [], None)
        one_by_one = apply_in(Path(tmp) / "single.db", log, list(range(1, n)), None)
        restarted = apply_in(Path(tmp) / "restart.db", log, cuts, restart_at)
    assert one_by_one == one_batch
    assert restarted == one_batch

    results, _, rows = one_batch
    expected, model = model_statuses(plan)
    assert [
        r.status.value if r.duplicate_of is None else f"retry:{r.status.value}" for r in results
    ] == expected
    assert {(r[0], r[1]): (r[2], r[4]) for r in rows} == model.entries


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(steps=st.lists(steps, min_size=3, max_size=40), data=st.data())
def test_batching_and_restarts_do_not_change_state_or_results(
    steps: list[object], data: st.DataObject
) -> None:
    plan = [*PROLOGUE, *steps]
    n = len(plan)
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=6)))
    check_plan(plan, cuts, data.draw(st.sampled_from([0, *cuts])))


def random_command(rng: random.Random, batch: bool = True) -> Command:
    ns = rng.choice(["a", "b", "a/x"])
    key = rng.choice(["k1", "k2", "k3"])
    version = rng.choice([None, None, None, 0, 1, 2, 3])
    roll = rng.random()
    if roll < 0.5:
        create_only = rng.random() < 0.1
        return PutConfig(ns, key, rng.choice("xyz"), "string", version, create_only)
    if roll < 0.7:
        return DeleteConfig(ns, key, version, rng.random() < 0.1)
    if roll < 0.8:
        return PutNamespace(ns, rng.choice([None, "desc"]))
    if roll < 0.87:
        return DeleteNamespace(ns)
    if batch:
        return Batch(tuple(random_command(rng, False) for _ in range(rng.randrange(4))))
    return PutConfig(ns, key, "in batch")


@pytest.mark.parametrize("seed", range(12))
def test_long_random_sequences_agree_with_the_model(seed: int) -> None:
    """Longer runs than hypothesis likes to generate, from seeded randomness."""
    rng = random.Random(seed)
    plan: list[object] = list(PROLOGUE)
    for _ in range(150):
        roll = rng.random()
        if roll < 0.03:
            plan.append("noop")
        elif roll < 0.05:
            plan.append("garbage")
        elif roll < 0.07:
            plan.append(("compact", rng.randrange(len(plan) + 5)))
        else:
            key = rng.choice([None, None, "i1", "i2", "i3"])
            plan.append(
                (
                    random_command(rng),
                    rng.choice(["alice", "bob"]),
                    rng.randrange(6),
                    key,
                    rng.choice([0, 5, 10, 30]),
                )
            )
    cuts = sorted(rng.sample(range(1, len(plan)), 8))
    check_plan(plan, cuts, rng.choice(cuts))
