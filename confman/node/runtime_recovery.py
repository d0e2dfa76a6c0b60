"""Recovery at start: open the snapshot store and the state database, restore a snapshot
newer than the database, replay the WAL into the core's log storage (making the WAL agree
with a snapshot it did not record yet), bootstrap a new cluster, check that database and log
belong together, and build the Raft core. Runs on a worker thread before the node starts."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confman.node.config import Member, NodeConfig
from confman.node.runtime_snapshots import snapshot_ref
from confman.node.state.machine import StateMachine
from confman.node.storage.snapshots import SnapshotStore
from confman.node.storage.wal import WAL
from confman.raft.bootstrap import bootstrap_entries
from confman.raft.config import Config
from confman.raft.node import RawNode
from confman.raft.storage import MemoryStorage
from confman.raft.types import ConfState, HardState, Snapshot

log = logging.getLogger("confman.node")


@dataclass(slots=True)
class Recovered:
    """The node's stores and core as recovery left them."""

    snapshots: SnapshotStore
    sm: StateMachine
    wal: WAL
    storage: MemoryStorage
    core: RawNode
    #: Index of the snapshot the log starts after (0: none).
    last_snap_index: int
    #: (term, vote) of the hard state on disk.
    persisted_vote: tuple[int, str | None]


def recover(cfg: NodeConfig, members: Mapping[str, Member], data_dir: Path) -> Recovered:
    """Open SQLite, restore a newer snapshot, open and replay the WAL (worker thread)."""
    snapshots = SnapshotStore(data_dir / "snapshots", cfg.snapshot_retain)
    sm = StateMachine(data_dir / "state.db")
    latest = snapshots.latest()
    if latest is not None and latest.index > sm.applied_index:
        log.info("restoring snapshot at %d (state was at %d)", latest.index, sm.applied_index)
        sm.restore(latest.path)
    wal = WAL.open(data_dir / "wal")
    ws = wal.replay()
    storage = MemoryStorage()
    entries = ws.entries
    hard_state = ws.hard_state
    last_snap_index = 0
    base = None
    if ws.snapshot_index:
        base = next((s for s in snapshots.snapshots() if s.index == ws.snapshot_index), None)
        if base is None:
            raise RuntimeError(
                f"WAL refers to a snapshot at {ws.snapshot_index} that is not in {snapshots.dir}"
            )
    if latest is not None and latest.index > ws.snapshot_index:
        # A snapshot was kept (taken, or received and installed) but the node stopped
        # before the WAL recorded it: make the WAL agree, as the marker would have.
        if any(e.index == latest.index and e.term == latest.term for e in entries):
            entries = [e for e in entries if e.index > latest.index]
        else:
            entries = []
        wal.save_snapshot_marker(latest.index, latest.term)
        base = latest
    if base is not None:
        storage.apply_snapshot(Snapshot(base.meta, snapshot_ref(base.path.name)))
        last_snap_index = base.index
        if hard_state.commit < base.index:
            hard_state = HardState(hard_state.term, hard_state.vote, base.index)
    if entries:
        storage.append(entries)
    storage.set_hard_state(hard_state)
    if storage.last_index() == 0 and sm.applied_index == 0:
        ents, hs = bootstrap_entries(members)
        wal.save(hs, ents, sync=True)
        storage.append(ents)
        storage.set_hard_state(hs)
        log.info("bootstrapped a new cluster: %s", ", ".join(sorted(members)))
    if sm.applied_index > storage.last_index():
        raise RuntimeError(
            f"state database applied {sm.applied_index} but the WAL ends at "
            f"{storage.last_index()}: the WAL was lost or belongs to another node"
        )
    if sm.applied_index < storage.first_index() - 1:
        raise RuntimeError(
            f"state database at {sm.applied_index} is older than the snapshot at "
            f"{storage.first_index() - 1} and no snapshot file covers it"
        )
    if storage.hard_state.commit < sm.applied_index:
        hs = storage.hard_state
        storage.set_hard_state(HardState(hs.term, hs.vote, sm.applied_index))
    persisted_vote = (storage.hard_state.term, storage.hard_state.vote)
    storage.conf_state = sm.conf_state() if sm.applied_index else ConfState()
    lo, hi = cfg.election_ticks
    raft_cfg = Config(
        id=cfg.node_id,
        election_tick_min=lo,
        election_tick_max=hi,
        heartbeat_tick=cfg.heartbeat_ticks,
        applied=sm.applied_index,
        rng=random.Random(),
    )
    core = RawNode(raft_cfg, storage)
    return Recovered(snapshots, sm, wal, storage, core, last_snap_index, persisted_vote)
