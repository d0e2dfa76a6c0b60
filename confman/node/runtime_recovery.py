"""Recovery at start: open the snapshot store and the state database, restore a snapshot
file newer than the database (then delete every snapshot file), replay the WAL into the
core's log storage (making the WAL agree with a snapshot it did not record yet), bootstrap
a new cluster, check that database and log belong together (docs/storage.md §6.4), and
build the Raft core. Runs on a worker thread before the node starts."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confman.node.config import Member, NodeConfig
from confman.node.runtime_snapshots import LIVE_REF
from confman.node.state.machine import StateMachine
from confman.node.storage.snapshots import SnapshotStore
from confman.node.storage.wal import WAL
from confman.raft.bootstrap import bootstrap_entries
from confman.raft.config import Config
from confman.raft.node import RawNode
from confman.raft.storage import MemoryStorage
from confman.raft.types import ConfState, HardState, Snapshot, SnapshotMeta

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
    """Open SQLite, restore a newer snapshot file, open and replay the WAL (worker thread).

    The state database at applied index ``S`` and the WAL's marker ``M`` (docs/storage.md
    §6.4): ``S >= M`` is the normal case (entries ``M+1..S`` are applied already);
    ``S < M`` means the database lost synced data and is refused. A snapshot file is only
    needed while the database is behind it: one received but not installed when the node
    stopped, or one an older release took. It is installed, then every file is deleted.
    """
    snapshots = SnapshotStore(data_dir / "snapshots", cfg.snapshot_retain)
    sm = StateMachine(data_dir / "state.db")
    latest = snapshots.latest()
    restored = None
    if latest is not None and latest.index > sm.applied_index:
        log.info("restoring snapshot at %d (state was at %d)", latest.index, sm.applied_index)
        sm.restore(latest.path)
        restored = latest
    for old in snapshots.snapshots():  # the database is at or past every one of them now
        old.path.unlink(missing_ok=True)
    wal = WAL.open(data_dir / "wal")
    ws = wal.replay()
    storage = MemoryStorage()
    entries = ws.entries
    hard_state = ws.hard_state
    marker = (ws.snapshot_index, ws.snapshot_term)
    if restored is not None and restored.index > marker[0]:
        # A snapshot was kept (received, or taken by an older release) but the node
        # stopped before the WAL recorded it: make the WAL agree, as the marker would have.
        if any(e.index == restored.index and e.term == restored.term for e in entries):
            entries = [e for e in entries if e.index > restored.index]
        else:
            entries = []
        wal.save_snapshot_marker(restored.index, restored.term)
        marker = (restored.index, restored.term)
    applied = sm.applied_index
    if applied < marker[0]:
        raise RuntimeError(
            f"state database at {applied} is older than the durable index {marker[0]} "
            "recorded in the Raft WAL: the state database lost synced data (or was "
            "replaced), and no snapshot file covers it"
        )
    last_snap_index = marker[0]
    if marker[0]:
        # The log starts after M; the state there is the live database (at S >= M).
        meta = SnapshotMeta(marker[0], marker[1], sm.conf_state())
        storage.apply_snapshot(Snapshot(meta, LIVE_REF))
        if hard_state.commit < marker[0]:
            hard_state = HardState(hard_state.term, hard_state.vote, marker[0])
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
