"""Restarts, crashes and snapshots never change the applied state (no replay drift)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from confman.node.state.commands import PutConfig, PutNamespace
from confman.node.state.machine import ApplyOrderError, StateMachine
from confman.node.storage.snapshots import SnapshotInfo, SnapshotStore, install_snapshot
from tests.state.logbuilder import Log, audit_rows, digest_at, entry_rows, replay, workload

REPO = Path(__file__).resolve().parents[2]


def test_replay_drift_trap_one_write_is_version_1_after_restarts(tmp_path: Path) -> None:
    """The original's bug: a write replayed on restart became v3 and 'updated'."""
    log = Log()
    log.add(PutNamespace("ns"))
    log.add(PutConfig("ns", "k", "v"))
    for _ in range(3):
        with StateMachine(tmp_path / "s.db") as machine:
            replay(machine, log)
            assert [r[4] for r in entry_rows(machine)] == [1]
            assert [r[3] for r in audit_rows(machine)] == ["namespace.created", "config.created"]


def test_restart_ten_times_leaves_state_exactly_as_after_first_run(tmp_path: Path) -> None:
    log = workload(seed=11, count=300)
    db = tmp_path / "state.db"
    with StateMachine(db) as machine:
        first_results = replay(machine, log)
        expected = (machine.state_digest(), audit_rows(machine), entry_rows(machine))
    assert len(first_results) == len(log.entries)
    for _ in range(10):
        with StateMachine(db) as machine:
            assert machine.applied_index == len(log.entries)
            assert replay(machine, log) == []
            with pytest.raises(ApplyOrderError):
                machine.apply(log.entries[-1:], log.conf_states)
            assert (machine.state_digest(), audit_rows(machine), entry_rows(machine)) == expected


def test_ten_restarts_in_the_middle_give_the_same_state_and_results(tmp_path: Path) -> None:
    log = workload(seed=12, count=300)
    with StateMachine(tmp_path / "ref.db") as ref:
        ref_results = replay(ref, log, chunk=64)
        expected = (ref.state_digest(), audit_rows(ref), entry_rows(ref))
    rng = random.Random(12)
    cuts = [*sorted(rng.sample(range(1, len(log.entries)), 9)), len(log.entries)]
    results = []
    db = tmp_path / "state.db"
    for cut in cuts:  # ten process lifetimes, each applying a part of the log
        with StateMachine(db) as machine:
            pending = log.entries[machine.applied_index : cut]
            step = rng.randrange(1, 20)
            for lo in range(0, len(pending), step):
                results += machine.apply(pending[lo : lo + step], log.conf_states)
            assert machine.applied_index == cut
    assert results == ref_results
    with StateMachine(db) as machine:
        assert (machine.state_digest(), audit_rows(machine), entry_rows(machine)) == expected


CHILD = """
import sys
from confman.node.state.machine import StateMachine
from tests.state.logbuilder import workload
log = workload(seed=int(sys.argv[2]), count=int(sys.argv[3]))
machine = StateMachine(sys.argv[1])
for lo in range(machine.applied_index, len(log.entries), 5):
    machine.apply(log.entries[lo : lo + 5], log.conf_states)
    print(machine.applied_index, flush=True)
print("done", flush=True)
"""


def test_kill_9_mid_apply_loses_nothing_applied_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    seed, count = 13, 1500
    log = workload(seed=seed, count=count)
    db = tmp_path / "state.db"
    rng = random.Random(seed)
    applied = 0
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(seed), str(count)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout is not None
        target = applied + rng.randrange(20, 300)
        for line in child.stdout:  # kill as soon as it reports `target` entries applied
            assert line.strip() != "done", "the child finished before it was killed"
            if int(line) >= target:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        with StateMachine(db) as machine:
            assert machine.applied_index >= target
            applied = machine.applied_index
            # exactly the state of applying the prefix once, whatever the kill interrupted
            assert machine.state_digest() == digest_at(tmp_path, log, applied)
    with StateMachine(db) as machine:
        replay(machine, log)
        assert machine.state_digest() == digest_at(tmp_path, log, len(log.entries))


def _digest_of_snapshot(tmp: Path, info: SnapshotInfo) -> str:
    db = tmp / f"restored-{info.index}.db"
    install_snapshot(info.path, db)
    with StateMachine(db) as machine:
        assert machine.applied_index == info.index
        return machine.state_digest()


def test_snapshot_plus_tail_equals_the_whole_log(tmp_path: Path) -> None:
    log = workload(seed=14, count=400)
    with StateMachine(tmp_path / "full.db") as full:
        replay(full, log)
        full_digest = full.state_digest()
        full_audit = audit_rows(full)
    store = SnapshotStore(tmp_path / "snaps")
    with StateMachine(tmp_path / "leader.db") as leader:
        leader.apply(log.entries[:250], log.conf_states)
        info = store.create(tmp_path / "leader.db")
    assert (info.index, info.conf_state.voters) == (250, ("n1", "n2", "n3"))
    # a lagging follower with some state of its own receives the snapshot and the tail
    with StateMachine(tmp_path / "follower.db") as follower:
        follower.apply(log.entries[:40], log.conf_states)
        follower.restore(info.path)
        assert follower.applied_index == 250
        assert follower.conf_state() == info.conf_state
        with pytest.raises(ApplyOrderError):
            follower.apply(log.entries[40:50], log.conf_states)
        replay(follower, log)
        assert follower.state_digest() == full_digest
        assert audit_rows(follower) == full_audit
    with StateMachine(tmp_path / "follower.db") as reopened:  # and it survives a restart
        assert reopened.state_digest() == full_digest


def test_snapshot_taken_while_applying_holds_exactly_the_applied_state(tmp_path: Path) -> None:
    log = workload(seed=15, count=600)
    live = tmp_path / "live.db"
    store = SnapshotStore(tmp_path / "snaps", retain=1000)
    machine = StateMachine(live)
    infos: list[SnapshotInfo] = []
    errors: list[BaseException] = []
    started = threading.Event()
    stop = threading.Event()

    def snapshotter() -> None:
        try:
            while not stop.is_set():
                started.set()
                infos.append(store.create(live))
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=snapshotter)
    thread.start()
    try:
        for number, lo in enumerate(range(0, len(log.entries), 4)):
            if number % 25 == 0:  # make sure snapshots overlap with the applying
                started.clear()
                assert started.wait(timeout=30)
            machine.apply(log.entries[lo : lo + 4], log.conf_states)
    finally:
        stop.set()
        thread.join(timeout=60)
        machine.close()
    assert not errors, errors[0]
    indexes = sorted({i.index for i in infos})
    assert len(indexes) >= 5, indexes
    for info in {i.index: i for i in infos}.values():
        assert _digest_of_snapshot(tmp_path, info) == digest_at(tmp_path, log, info.index)
