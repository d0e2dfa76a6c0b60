"""Durability and log release (docs/storage.md §6, invariants I3 and I4): the WAL's marker
is written only after the state database was fsynced at (or past) its index, segments are
deleted only after the marker; a deliberately broken order is caught by the same check;
power loss at every WAL operation of the procedure never leaves a log that the durable
state cannot continue; the SQLite WAL is reset while apply is parked."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from confman.node.metrics import NodeMetrics
from confman.node.runtime_common import Control
from confman.node.runtime_snapshots import LIVE_REF, DurableSettings, Snapshotter, release_log
from confman.node.state.commands import PutConfig, PutNamespace, Request, encode_request
from confman.node.state.commands import format_timestamp as fmt
from confman.node.state.durability import Durability, DurablePoint, Park
from confman.node.state.machine import StateMachine
from confman.node.storage.faultfs import FaultFS, SimulatedCrash
from confman.node.storage.wal import WAL
from confman.raft.storage import MemoryStorage
from confman.raft.types import Entry, HardState

Event = tuple[str, int]


def _entries(start: int, n: int, value_bytes: int = 200) -> list[Entry]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        ts = fmt(t0 + timedelta(seconds=i))
        cmd = (
            PutNamespace("app", None, None)
            if i == 1
            else PutConfig("app", f"k{i % 20}", f"v{i}" + "x" * value_bytes)
        )
        out.append(Entry(1, i, data=encode_request(Request(cmd, "t", ts))))
    return out


def check_order(events: list[Event]) -> None:
    """I3: a marker at i follows an fsync of state.db-wal taken when applied >= i.
    I4: a release to i follows a marker at >= i."""
    durable = marked = 0
    for kind, index in events:
        if kind == "fsync-wal":
            durable = max(durable, index)
        elif kind == "marker":
            assert index <= durable, f"marker at {index} before the state was durable ({durable})"
            marked = max(marked, index)
        elif kind == "release":
            assert index <= marked, f"release to {index} before a marker covered it ({marked})"


class _Fixture:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, cls: type[Snapshotter]):
        self.events: list[Event] = []
        self.sm = StateMachine(tmp / "state.db")
        self.wal = WAL.open(tmp / "wal", segment_bytes=4000)
        self.storage = MemoryStorage()
        events, sm = self.events, self.sm

        def fsync(fd: int) -> None:
            name = os.readlink(f"/proc/self/fd/{fd}")
            os.fsync(fd)
            if name.endswith("-wal"):
                events.append(("fsync-wal", sm.applied_index))

        orig_marker, orig_release = WAL.save_snapshot_marker, WAL.release_to

        def marker(wal: WAL, index: int, term: int) -> None:
            events.append(("marker", index))
            orig_marker(wal, index, term)

        def release(wal: WAL, index: int) -> int:
            events.append(("release", index))
            return orig_release(wal, index)

        monkeypatch.setattr(WAL, "save_snapshot_marker", marker)
        monkeypatch.setattr(WAL, "release_to", release)
        self.exec = ThreadPoolExecutor(1)
        self.snapshotter = cls(
            "n",
            DurableSettings(every_entries=10**9, wal_limit_bytes=1 << 30),
            sm=self.sm,
            storage=self.storage,
            wal=self.wal,
            durability=Durability(self.sm.db_path, fsync=fsync),
            snap_exec=self.exec,
            wal_exec=self.exec,
            metrics=NodeMetrics("n"),
            ctl=Control(),
            last_index=0,
        )

    def apply(self, start: int, n: int) -> None:
        ents = _entries(start, n)
        for at in range(0, n, 20):
            batch = ents[at : at + 20]
            self.wal.save(HardState(1, None, batch[-1].index), batch, sync=True)
        self.storage.append(ents)
        for at in range(0, n, 64):
            self.sm.apply(ents[at : at + 64])

    def close(self) -> None:
        self.snapshotter.durability.close()
        self.sm.close()
        self.wal.close()
        self.exec.shutdown()


@pytest.fixture
def fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Fixture]:
    f = _Fixture(tmp_path, monkeypatch, Snapshotter)
    yield f
    f.close()


def test_round_marks_after_fsync_and_releases_after_the_marker(fixture: _Fixture) -> None:
    f = fixture
    f.apply(1, 200)
    segments = len(f.wal.segment_names())
    point = asyncio.run(f.snapshotter.round())
    assert point.index == 200 == f.wal.snapshot_index
    assert len(f.wal.segment_names()) < segments, "no segment released"
    check_order(f.events)
    assert [k for k, _ in f.events] == ["fsync-wal", "marker", "release"]
    snap = f.storage.snapshot()
    assert (snap.meta.index, snap.data) == (200, LIVE_REF)
    assert snap.meta.conf_state == f.sm.conf_state()
    f.apply(201, 50)
    asyncio.run(f.snapshotter.round())
    check_order(f.events)
    assert f.wal.snapshot_index == 250


class _MarkerFirst(Snapshotter):
    """Broken on purpose: writes the marker before the state is durable."""

    async def round(self) -> DurablePoint:
        sm: StateMachine = self._sm  # type: ignore[attr-defined]
        release_log(self._wal, sm.applied_index, sm.applied_term)  # type: ignore[attr-defined]
        return await super().round()


def test_the_check_catches_a_marker_before_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _Fixture(tmp_path, monkeypatch, _MarkerFirst)
    try:
        f.apply(1, 100)
        asyncio.run(f.snapshotter.round())
        with pytest.raises(AssertionError, match="before the state was durable"):
            check_order(f.events)
    finally:
        f.close()


def test_release_never_goes_back_below_the_marker(fixture: _Fixture) -> None:
    f = fixture
    f.apply(1, 100)
    asyncio.run(f.snapshotter.round())
    assert not release_log(f.wal, 50, 1)  # an older durable point (a round that lost a race)
    assert not release_log(f.wal, 10_000, 1)  # past the log: nothing to mark
    assert f.wal.snapshot_index == 100


def test_tail_resets_the_sqlite_wal_while_apply_is_parked(fixture: _Fixture) -> None:
    f = fixture
    f.apply(1, 600)  # no checkpoint yet: the SQLite WAL holds every commit
    s = f.snapshotter
    s._settings = DurableSettings(wal_limit_bytes=1, park_max_ms=5_000)  # type: ignore[misc]

    async def main() -> tuple[bool, int]:
        round_task = asyncio.create_task(s.round())
        parked = False
        while not round_task.done():
            parked = parked or s.gate() is not None
            await asyncio.sleep(0)
        point = await round_task
        return parked, point.wal_bytes

    parked, before = asyncio.run(main())
    assert before > 0 and s.parks == 1 and parked
    assert s.durability.wal_bytes() == 0 and s.durability.last_tail == "truncated"
    assert s.gate() is None
    # The database is whole: a fresh connection reads the last applied entry.
    conn = sqlite3.connect(f.sm.db_path)
    try:
        assert conn.execute("SELECT applied_index FROM meta").fetchone()[0] == 600
    finally:
        conn.close()


def _procedure(fs: FaultFS, db: Path, durable: list[int], synced: list[int]) -> None:
    """Appends, applies and durability rounds with the WAL on ``fs`` (crashes at any op)."""
    wal = WAL.open("/wal", fs=fs, segment_bytes=1500)
    sm = StateMachine(db)
    dur = Durability(sm.db_path)
    try:
        for b in range(12):
            ents = _entries(b * 5 + 1, 5, value_bytes=20)
            wal.save(HardState(1, None, ents[-1].index), ents, sync=True)
            synced.append(ents[-1].index)
            sm.apply(ents)
            if b % 3 == 2:
                point = dur.round()
                durable.append(point.index)
                release_log(wal, point.index, point.term)
    finally:
        dur.close()
        sm.close()


def _run(k: int | None, db: Path) -> tuple[FaultFS, list[int], list[int], int]:
    fs = FaultFS(crash_after=k)
    durable: list[int] = []
    synced: list[int] = []
    with contextlib.suppress(SimulatedCrash):
        _procedure(fs, db, durable, synced)
    if not db.exists():
        return fs, durable, synced, 0
    conn = sqlite3.connect(db)
    try:
        applied = int(conn.execute("SELECT applied_index FROM meta").fetchone()[0])
    finally:
        conn.close()
    return fs, durable, synced, applied


def test_power_loss_at_every_wal_operation_keeps_the_log_continuable(tmp_path: Path) -> None:
    clean, _, _, _ = _run(None, tmp_path / "clean.db")
    total = clean.ops
    assert total > 20
    for k in range(total + 1):
        for seed in range(3):
            fs, durable, synced, applied = _run(k, tmp_path / f"state-{k}-{seed}.db")
            ws = WAL.open("/wal", fs=fs.crash(seed), segment_bytes=1500).replay()
            m = ws.snapshot_index
            # I3: the marker never exceeds what was durable in the state database.
            assert m <= max(durable, default=0), (k, seed, m, durable)
            assert applied >= m  # recovery's S >= M holds
            # No synced entry is lost: the log continues from the marker through them.
            last = ws.entries[-1].index if ws.entries else m
            assert last >= max(synced, default=0), (k, seed, last, synced)
            if ws.entries:
                assert ws.entries[0].index == m + 1


def test_park_rules_truncate_and_give_up_exclude_each_other() -> None:
    p = Park()
    assert p.give_up() and not p.enter_truncate()  # timed out first: no TRUNCATE
    p = Park()
    assert p.enter_truncate() and not p.give_up()  # TRUNCATE started: apply waits for it


class _SlowTail(Durability):
    """The tail's PASSIVE (the round's second) takes 300 ms."""

    passives = 0

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        if mode == "PASSIVE":
            self.passives += 1
            if self.passives == 2:
                time.sleep(0.3)
        return super().checkpoint(mode)


def test_park_is_bounded_when_the_tail_checkpoint_is_slow(fixture: _Fixture) -> None:
    f = fixture
    f.apply(1, 300)
    s = f.snapshotter
    slow = _SlowTail(f.sm.db_path)
    s.durability = slow
    s._settings = DurableSettings(wal_limit_bytes=1, park_max_ms=20)  # type: ignore[misc]

    async def main() -> float:
        task = asyncio.create_task(s.round())
        while s.gate() is None and not task.done():
            await asyncio.sleep(0)
        gate = s.gate()
        assert gate is not None
        t0 = time.monotonic()
        await gate
        waited = time.monotonic() - t0
        await task
        return waited

    waited = asyncio.run(main())
    assert waited < 0.2, f"apply was parked for {waited:.3f} s (bound 20 ms)"
    assert slow.passives == 2 and slow.last_tail in ("busy", "complete")  # no TRUNCATE
    assert s.gate() is None
    slow.close()


def test_round_returns_free_pages_when_the_freelist_is_large(
    fixture: _Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = fixture
    f.apply(1, 100)
    calls: list[int] = []
    monkeypatch.setattr(f.sm, "vacuum_step", lambda n: calls.append(n) or 0)
    asyncio.run(f.snapshotter.round())
    assert calls == []  # a small freelist: nothing to return
    orig = f.snapshotter.durability.durable_point

    def big_freelist() -> DurablePoint:
        return dataclasses.replace(orig(), freelist_bytes=1 << 40)

    monkeypatch.setattr(f.snapshotter.durability, "durable_point", big_freelist)
    f.apply(101, 10)
    asyncio.run(f.snapshotter.round())
    assert calls == [256]
