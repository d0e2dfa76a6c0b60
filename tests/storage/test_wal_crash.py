"""A scripted workload crashed at every write and sync boundary recovers to a state that
contains every entry that was synced, and nothing that was not written.

The workload runs over ``FaultFS`` with ``crash_after=k`` for every k up to the number of
file-system operations of a clean run; power is then lost under several seeds (which
unsynced writes and directory changes survive, which write is torn) and the WAL reopened.
The recovered state must be the reference model's state after some prefix of the
operations: no shorter than the last operation that synced, no longer than the one that
was in progress, where an operation in flight may have left only its entries or only its
hard state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from confman.node.storage.faultfs import FaultFS, SimulatedCrash
from confman.node.storage.wal import WAL
from confman.raft.types import Entry, HardState
from tests.storage.helpers import LogModel, State, as_tuple

D = "/wal"
SEGMENT_BYTES = 600


@dataclass
class Op:
    kind: str  # "save", "marker", "release" or "sync"
    hs: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    sync: bool = True
    index: int = 0
    term: int = 0


def workload(seed: int, n: int) -> list[Op]:
    """A valid sequence of WAL calls: appends, conflicting rewrites, snapshots, releases."""
    rng = random.Random(seed)
    model = LogModel()
    term, commit, ops = 1, 0, []
    for _ in range(n):
        snap, last = model.snapshot[0], model.last_index
        r = rng.random()
        if r < 0.7:
            if rng.random() < 0.15:
                term += 1
            start = last + 1
            if rng.random() < 0.25 and last > max(snap, commit):  # rewrite an uncommitted suffix
                start = rng.randint(max(snap, commit) + 1, last)
            count = rng.choice((0, 1, 1, 2, 3, 6))
            batch = [
                Entry(term, start + k, data=rng.randbytes(rng.randint(0, 150)))
                for k in range(count)
            ]
            new_last = batch[-1].index if batch else last
            hs = None
            if not batch or rng.random() < 0.7:
                commit = min(new_last, commit + rng.randint(0, 3))
                hs = HardState(term, rng.choice((None, "n1", "n2")), commit)
            op = Op("save", hs, batch, sync=rng.random() < 0.75)
            model.save(op.hs, op.entries)
        elif r < 0.8 and commit > snap:  # local snapshot of committed entries
            index = rng.randint(snap + 1, commit)
            op = Op("marker", index=index, term=model.term_at(index))
            model.marker(index, op.term)
        elif r < 0.85:  # snapshot installed from a leader: the log does not contain it
            term += 1
            index = max(last, snap) + rng.randint(1, 4)
            op = Op("marker", index=index, term=term)
            model.marker(index, term)
            commit = index
        elif r < 0.95:
            op = Op("release", index=rng.randint(0, snap))
        else:
            op = Op("sync")
        ops.append(op)
    return ops


def model_states(ops: list[Op]) -> tuple[list[State], list[set[State]]]:
    """State after each prefix of ops, and the extra states an op in flight may leave."""
    model = LogModel()
    states, partial = [model.state()], [set()]
    for op in ops:
        torn: set[State] = set()
        if op.kind == "save" and op.hs is not None and op.entries:
            for hs, batch in ((None, op.entries), (op.hs, [])):
                m = model.copy()
                m.save(hs, batch)
                torn.add(m.state())
        if op.kind == "save":
            model.save(op.hs, op.entries)
        elif op.kind == "marker":
            model.marker(op.index, op.term)
        states.append(model.state())
        partial.append(torn)
    return states, partial


def run(ops: list[Op], fs: FaultFS) -> tuple[int, int]:
    """Run until done or crashed: (ops known durable, op in progress or len(ops))."""
    durable = 0
    try:
        wal = WAL.open(D, fs=fs, segment_bytes=SEGMENT_BYTES)
    except SimulatedCrash:
        return 0, 0
    for j, op in enumerate(ops, start=1):
        try:
            if op.kind == "save":
                wal.save(op.hs, op.entries, sync=op.sync)
            elif op.kind == "marker":
                wal.save_snapshot_marker(op.index, op.term)
            elif op.kind == "release":
                wal.release_to(op.index)
            else:
                wal.sync()
        except SimulatedCrash:
            return durable, j
        if (op.kind == "save" and op.sync) or op.kind in ("marker", "sync"):
            durable = j
    wal.close()
    return durable, len(ops)


def check_crashes(ops: list[Op], seeds: range) -> int:
    states, partial = model_states(ops)
    clean = FaultFS()
    run(ops, clean)
    checked = 0
    for k in range(clean.ops + 1):
        fs = FaultFS(crash_after=k)
        durable, reached = run(ops, fs)
        allowed = set(states[durable : reached + 1]).union(*partial[durable + 1 : reached + 1])
        for seed in seeds:
            after = fs.crash(random.Random(k * 1000 + seed))
            with WAL.open(D, fs=after, segment_bytes=SEGMENT_BYTES) as w:
                got = as_tuple(w.replay())
                assert got in allowed, (
                    f"crash after {k} fs ops (seed {seed}): ops 1..{durable} were durable, "
                    f"op {reached} in flight; recovered a state no prefix explains"
                )
                # the recovered WAL accepts writes that survive the next restart
                nxt = Entry(99, w.last_index + 1, data=b"after")
                w.save(HardState(99), [nxt])
            with WAL.open(D, fs=after, segment_bytes=SEGMENT_BYTES) as w:
                again = as_tuple(w.replay())
                assert again[0] == HardState(99) and again[3][-1] == nxt
                assert again[1:3] == got[1:3] and again[3][:-1] == got[3]
            checked += 1
    return checked


@pytest.mark.parametrize("wl_seed", range(3))
def test_crash_at_every_boundary_recovers_a_synced_prefix(wl_seed: int) -> None:
    ops = workload(wl_seed, 45)
    kinds = {op.kind for op in ops}
    assert {"save", "marker", "release"} <= kinds
    assert check_crashes(ops, range(3)) > 100


def test_workload_exercises_rolls_rewrites_and_releases() -> None:
    ops = workload(0, 45)
    fs = FaultFS()
    run(ops, fs)
    assert any(op.kind == "save" and op.entries and not op.sync for op in ops)
    rewrites = 0
    model = LogModel()
    for op in ops:
        if op.kind == "save" and op.entries and op.entries[0].index <= model.last_index:
            rewrites += 1
        if op.kind == "save":
            model.save(op.hs, op.entries)
        elif op.kind == "marker":
            model.marker(op.index, op.term)
    assert rewrites > 0
    names = sorted(fs.files(D))
    assert int(names[0][:16]) > 1  # segments were released
    assert len(names) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("wl_seed", range(3, 15))
def test_crash_sweep_more_workloads(wl_seed: int, request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("--slow", default=False):
        pytest.skip("needs --slow")
    check_crashes(workload(wl_seed, 80), range(6))
