"""Apply: the worker that takes committed work from the Ready loop in log order and applies
it, entry batches on the loop in slices and received snapshots by replacing the state; it
keeps the applied index and the reader (`AppliedState`) and tells proposals, waiters,
the snapshotter and the ``on_applied`` callbacks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confman.node.metrics import NodeMetrics
from confman.node.runtime_requests import AppliedWaiters, Proposals
from confman.node.runtime_snapshots import Snapshotter, snapshot_name
from confman.node.state.machine import ApplyResult, StateMachine
from confman.node.state.queries import Reader
from confman.raft.types import ConfState, Entry, Snapshot

log = logging.getLogger("confman.node")

#: Committed entries applied in one go on the loop before it yields (~3 ms of work).
APPLY_SLICE = 64
#: Committed batches that may wait for the apply worker before the Ready loop waits too.
APPLY_QUEUE_BATCHES = 64

#: Committed work for the apply worker, in log order: an entry batch with the membership
#: after each of its membership changes, or a snapshot.
ApplyItem = tuple[list[Entry], dict[int, ConfState]] | Snapshot
OnApplied = Callable[[list[Entry], list[ApplyResult]], None]


@dataclass(slots=True)
class AppliedState:
    """What has been applied here, and the reader of that state (None while a snapshot is
    being installed)."""

    index: int = 0
    reader: Reader | None = None


class Applier:
    """Applies the items of ``queue`` in order (``run``); ``on_applied`` callbacks run after
    every applied batch with (entries, results), and with two empty lists after a snapshot
    replaced the state."""

    def __init__(
        self,
        state: AppliedState,
        *,
        sm: StateMachine,
        db_path: Path,
        snapshots_dir: Path,
        apply_exec: ThreadPoolExecutor,
        snap_exec: ThreadPoolExecutor,
        metrics: NodeMetrics,
        proposals: Proposals,
        waiters: AppliedWaiters,
        snapshotter: Snapshotter,
        on_applied: list[OnApplied],
    ) -> None:
        self.queue: asyncio.Queue[ApplyItem] = asyncio.Queue(maxsize=APPLY_QUEUE_BATCHES)
        self._state = state
        self._sm = sm
        self._db_path = db_path
        self._snapshots_dir = snapshots_dir
        self._apply_exec = apply_exec
        self._snap_exec = snap_exec
        self._metrics = metrics
        self._proposals = proposals
        self._waiters = waiters
        self._snapshotter = snapshotter
        self._on_applied = on_applied

    async def run(self, node_id: str, die: Callable[[], None]) -> None:
        """Apply committed batches and snapshots in order, off the Ready loop; ``die`` when
        applying fails."""
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item, Snapshot):
                    await self._install_snapshot(item)
                else:
                    await self._apply(*item)
            except Exception:
                log.critical("node %s: applying failed; stopping", node_id, exc_info=True)
                die()
                return

    async def _apply(self, entries: list[Entry], conf_states: dict[int, ConfState]) -> None:
        # On the loop thread, in slices. A worker thread would trade the GIL back and forth
        # with the busy loop at every SQLite call: measured 10x slower than the work itself.
        # Nothing here waits for the disk (synchronous=NORMAL; checkpoints run elsewhere).
        for start in range(0, len(entries), APPLY_SLICE):
            if start:
                await asyncio.sleep(0)  # let heartbeats and requests through
            if (park := self._snapshotter.gate()) is not None:
                await park  # a bounded pause while the SQLite WAL is reset (§8)
            self._apply_slice(entries[start : start + APPLY_SLICE], conf_states)

    def _apply_slice(self, entries: list[Entry], conf_states: dict[int, ConfState]) -> None:
        t0 = time.perf_counter()
        results = self._sm.apply(entries, conf_states)
        self._metrics.apply_latency.observe(time.perf_counter() - t0)
        applied = self._state.index = entries[-1].index
        self._proposals.settle(entries, results)
        self._waiters.wake(applied)
        self._metrics.applied_index.set(applied)
        self._snapshotter.after_apply(len(entries), applied)
        self._notify(entries, results)

    def _notify(self, entries: list[Entry], results: list[ApplyResult]) -> None:
        """Run the ``on_applied`` callbacks (empty lists after a snapshot install)."""
        for cb in self._on_applied:
            try:
                cb(entries, results)
            except Exception:
                log.exception("on_applied callback failed")

    def close_reader(self) -> None:
        if self._state.reader is not None:
            self._state.reader.close()
            self._state.reader = None

    async def _install_snapshot(self, snap: Snapshot) -> None:
        """Replace the state with a snapshot received from the leader; the received file is
        renamed into place (or, from an older release, copied and then deleted)."""
        loop = asyncio.get_running_loop()
        path = self._snapshots_dir / snapshot_name(snap.data)
        async with self._snapshotter.lock:  # no durability round on the old file meanwhile
            await loop.run_in_executor(self._snap_exec, self._snapshotter.durability.close)
            self.close_reader()
            try:
                await loop.run_in_executor(self._apply_exec, self._restore, path)
            finally:
                self._state.reader = Reader(self._db_path)
        self._state.index = snap.meta.index
        self._metrics.snapshots_installed.inc()
        self._proposals.replaced_through(snap.meta.index)
        self._waiters.wake(snap.meta.index)
        self._notify([], [])
        log.info("installed snapshot at %d (term %d)", snap.meta.index, snap.meta.term)

    def _restore(self, path: Path) -> None:
        self._sm.restore(path)
        path.unlink(missing_ok=True)  # nothing of it stays at rest
