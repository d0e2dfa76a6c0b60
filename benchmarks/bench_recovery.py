"""Time to recover a node holding N applied entries (default 100,000 of 1 KB).

    .venv/bin/python -m benchmarks.bench_recovery [--entries 1000000] [--rounds 3]

Builds a single-node data directory (WAL + SQLite state) directly, then times
``Runtime.start()`` until the node is leader with everything applied (it then serves
reads), in these cases:

- **restart, log released** (issue 16's bar: <= 2 s at 1,000,000 entries): what a running
  node leaves behind: the state database at N and a Raft WAL released up to a durable
  marker ``RELEASED_TAIL`` entries below N, with that tail after it;
- **restart, state current, whole log** (a node that never released its log);
- **restart, state lost (replay all)**: no state database, no marker: the whole WAL is
  replayed into SQLite;
- **restart, old snapshot file at 90%**: an older release's data directory (a snapshot
  file of the database at 90% and the whole WAL), restored then deleted at start.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from confman.node.config import Member, NodeConfig
from confman.node.runtime import Runtime
from confman.node.state.commands import PutConfig, PutNamespace, Request, encode_request
from confman.node.state.machine import StateMachine
from confman.node.storage.snapshots import SnapshotStore
from confman.node.storage.wal import WAL
from confman.raft.bootstrap import bootstrap_entries
from confman.raft.confchange import apply_to, decode_conf_change
from confman.raft.types import ConfState, Entry, EntryType, HardState


def _config(root: Path) -> NodeConfig:
    return NodeConfig(
        node_id="solo",
        data_dir=root,
        members=(Member("solo", ("127.0.0.1", 1), "http://127.0.0.1:1/"),),
        cluster_secret=b"x" * 32,
        http_listen=("127.0.0.1", 0),
        http_advertise="http://127.0.0.1:0/",
        raft_listen=("127.0.0.1", 0),
        snapshot_interval=10**9,
    )


#: Entries after the durable marker in the "log released" case (~1 s of writes, about what
#: a node releases at: ``storage.durable_every_entries`` plus the catch-up tail).
RELEASED_TAIL = 1_000


def build(root: Path, n: int, snapshot_at: int | None, released: bool = False) -> None:
    """A data dir holding ``n`` config writes (10,000 keys, 1 KB values): the whole log in
    the WAL, or (``released``) only the entries after a marker ``RELEASED_TAIL`` below n."""
    root.mkdir(parents=True)
    boot, _ = bootstrap_entries(["solo"])
    ts = "2026-01-01T00:00:00.000000Z"
    value = "v" * 1000
    entries = list(boot)
    entries.append(
        Entry(
            1,
            len(entries) + 1,
            EntryType.NORMAL,
            encode_request(Request(PutNamespace("bench", None, None), "b", ts)),
        )
    )
    base = len(entries)
    for i in range(n):
        data = encode_request(Request(PutConfig("bench", f"k{i % 10_000}", value), "b", ts))
        entries.append(Entry(1, base + i + 1, EntryType.NORMAL, data))
    with WAL.open(root / "wal") as wal:
        start = 0
        if released:
            start = len(entries) - RELEASED_TAIL
            wal.save_snapshot_marker(start, 1)
        for k in range(start, len(entries), 1000):
            wal.save(None, entries[k : k + 1000], sync=False)
        wal.save(HardState(1, "solo", len(entries)), [], sync=True)
    sm = StateMachine(root / "state.db")
    conf = ConfState()
    confs = {}
    for e in boot:
        conf = apply_to(conf, decode_conf_change(e.data))
        confs[e.index] = conf
    upto = snapshot_at if snapshot_at is not None else len(entries)
    for k in range(0, upto, 256):
        sm.apply(entries[k : min(k + 256, upto)], confs)
    if snapshot_at is not None:
        SnapshotStore(root / "snapshots").create(root / "state.db")
        sm.close()
        for f in root.glob("state.db*"):
            f.unlink()
        # The WAL keeps everything; the snapshot file covers the first 90%.
    else:
        sm.close()


async def time_start(root: Path, target: int) -> float:
    rt = Runtime(_config(root))
    t0 = time.perf_counter()
    await rt.start()
    while rt.role != "leader" or rt.applied_index < target:
        await asyncio.sleep(0.005)
    took = time.perf_counter() - t0
    await rt.stop()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--cases",
        type=lambda v: [c.strip() for c in v.split(",")],
        default=None,
        help="comma-separated cases: released, whole-log, lost, old-snapshot (default: all)",
    )
    args = ap.parse_args()
    n = args.entries
    args.cases = args.cases or ["released", "whole-log", "lost", "old-snapshot"]
    total = n + 2  # bootstrap + namespace
    work = Path(tempfile.mkdtemp(prefix="bench-recovery-", dir="/tmp"))
    rows = []
    try:
        cases: dict[str, tuple[str, int | None, bool]] = {
            "released": ("restart, log released", None, True),
            "whole-log": ("restart, state current, whole log", None, False),
            "lost": ("restart, state lost (replay all)", 0, False),
            "old-snapshot": ("restart, old snapshot file at 90%", int(total * 0.9), False),
        }
        unknown = set(args.cases) - set(cases)
        if unknown:
            raise SystemExit(f"unknown case(s) {sorted(unknown)}; known: {', '.join(cases)}")
        for case in args.cases:
            name, snap, released = cases[case]
            times = []
            for r in range(args.rounds):
                root = work / f"{abs(hash(name))}-{r}"
                build(root, n, snap, released)
                if snap == 0:
                    for f in root.glob("state.db*"):
                        f.unlink()
                times.append(asyncio.run(time_start(root, total)))
                shutil.rmtree(root)
            rows.append((name, statistics.median(times), min(times), max(times)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"recovery of a node holding {n:,} entries of 1 KB (median of {args.rounds})")
    print(f"{'case':<36} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, med, lo, hi in rows:
        print(f"{name:<36} {med:>9.2f} {lo:>7.2f} {hi:>7.2f}")


if __name__ == "__main__":
    main()
