"""Group-commit throughput of the WAL and its replay time.

Run: ``.venv/bin/python -m benchmarks.bench_wal [--rounds 3] [--replay 100000] [--dir DIR]``

Writes 1 KB entries on the real file system (default: a temporary directory under
``data/`` of the repository), one ``save`` (one write + one fdatasync) per batch of 1, 16
or 256 entries, each with a hard state as a Ready carries. Each round starts from a fresh
WAL; the table shows the median of the rounds. Replay: a WAL of ``--replay`` 1 KB entries
is written once, then opened and replayed ``--rounds`` times (page cache warm).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from confman.node.storage.wal import WAL
from confman.raft.types import Entry, HardState

ENTRY_BYTES = 1024
# batch size -> saves per round (about 1-2 s each on a VM disk)
BATCHES = {1: 4000, 16: 1500, 256: 200}


def _entries(first: int, count: int, payload: bytes) -> list[Entry]:
    return [Entry(1, i, data=payload) for i in range(first, first + count)]


def write_round(directory: Path, batch: int, saves: int) -> tuple[float, list[float]]:
    """Seconds spent in ``save`` for ``saves`` batches, and each save's latency."""
    payload = os.urandom(ENTRY_BYTES)
    batches = [_entries(1 + k * batch, batch, payload) for k in range(saves)]
    latencies = []
    with WAL.open(directory) as wal:
        start = time.perf_counter()
        for k, ents in enumerate(batches):
            t = time.perf_counter()
            wal.save(HardState(1, "n1", k * batch), ents)
            latencies.append(time.perf_counter() - t)
        total = time.perf_counter() - start
    return total, latencies


def replay_round(directory: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with WAL.open(directory) as wal:
        n = len(wal.replay().entries)
    return time.perf_counter() - start, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replay", type=int, default=100_000, help="entries in the replayed WAL")
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parent.parent / "data"))
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench_wal-", dir=args.dir))
    try:
        print(f"WAL group commit, {ENTRY_BYTES} B entries, median of {args.rounds} rounds")
        print(
            f"{'batch':>6} {'entries/s':>11} {'fdatasyncs/s':>13} {'MB/s':>7} "
            f"{'save p50 µs':>12} {'save p99 µs':>12}"
        )
        for batch, saves in BATCHES.items():
            rows = []
            for r in range(args.rounds):
                d = root / f"w{batch}-{r}"
                total, lat = write_round(d, batch, saves)
                lat.sort()
                rows.append((total, lat[len(lat) // 2], lat[int(len(lat) * 0.99)]))
                shutil.rmtree(d)
            total = statistics.median(t for t, _, _ in rows)
            p50 = statistics.median(p for _, p, _ in rows)
            p99 = statistics.median(p for _, _, p in rows)
            print(
                f"{batch:>6} {saves * batch / total:>11,.0f} {saves / total:>13,.0f} "
                f"{saves * batch * ENTRY_BYTES / total / 1e6:>7,.1f} "
                f"{p50 * 1e6:>12,.0f} {p99 * 1e6:>12,.0f}"
            )

        d = root / "replay"
        payload = os.urandom(ENTRY_BYTES)
        with WAL.open(d) as wal:
            for first in range(1, args.replay + 1, 256):
                count = min(256, args.replay + 1 - first)
                wal.save(HardState(1, "n1", first - 1), _entries(first, count, payload), sync=False)
            wal.sync()
        size = sum(f.stat().st_size for f in d.iterdir())
        times = []
        for _ in range(args.rounds):
            t, n = replay_round(d)
            assert n == args.replay, n
            times.append(t)
        med = statistics.median(times)
        print(
            f"\nreplay of {args.replay:,} entries ({size / 1e6:,.0f} MB, "
            f"{len(list(d.iterdir()))} segments): median {med:.3f} s "
            f"({args.replay / med:,.0f} entries/s, {size / med / 1e6:,.0f} MB/s)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
