"""Apply throughput of the state machine, rebuild time, and point reads.

Run: ``.venv/bin/python -m benchmarks.bench_apply [--rounds 3] [--rebuild 100000]``

Workload: one namespace, 10,000 keys, 1 KB values, PutConfig commands cycling over the
keys (creates first, then updates), pre-encoded as the leader would. Each round starts
from a fresh database in a temporary directory; the table shows the median of the rounds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confman.node.state.commands import PutConfig, PutNamespace, Request, encode_request
from confman.node.state.machine import StateMachine
from confman.node.state.queries import Reader
from confman.node.storage.snapshots import SnapshotStore
from confman.raft.types import Entry

KEYS = 10_000
VALUE_BYTES = 1024
NAMESPACE = "bench"
TAIL = 20_000  # entries applied while a snapshot is taken


def make_entries(count: int, seed: int = 7) -> list[Entry]:
    """Entry 1 creates the namespace, the rest put 1 KB values over ``KEYS`` keys."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    values = ["".join(rng.choices(alphabet, k=VALUE_BYTES)) for _ in range(64)]
    entries = [
        Entry(
            1,
            1,
            data=encode_request(
                Request(PutNamespace(NAMESPACE), "bench", "2026-02-13T10:00:00.000000Z")
            ),
        )
    ]
    for i in range(count):
        ts = (
            f"2026-02-13T10:{(i // 1_000_000) % 60:02d}:{(i // 10_000) % 60:02d}."
            f"{i % 1_000_000:06d}Z"
        )
        cmd = PutConfig(NAMESPACE, f"key-{i % KEYS:05d}", values[i % len(values)])
        entries.append(Entry(1, i + 2, data=encode_request(Request(cmd, "bench", ts))))
    return entries


@dataclass(frozen=True)
class Timing:
    """Wall-clock and CPU seconds (this process, SQLite included) of one measured run."""

    wall: float
    cpu: float

    @staticmethod
    def median(runs: list[Timing]) -> Timing:
        return Timing(
            statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs)
        )

    def rates(self, count: int, unit: str) -> tuple[str, str]:
        return f"{count / self.wall:>9,.0f} {unit}", f"{count / self.cpu:>9,.0f} {unit}"


def timed(work: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def apply_all(machine: StateMachine, entries: list[Entry], batch: int) -> None:
    """Apply ``entries`` in batches of ``batch``."""
    for lo in range(0, len(entries), batch):
        machine.apply(entries[lo : lo + batch])


def in_fresh_db(work: Callable[[StateMachine, Path], Timing]) -> Timing:
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        db = Path(tmp) / "state.db"
        machine = StateMachine(db)
        try:
            return work(machine, db)
        finally:
            machine.close()


def bench_batch(entries: list[Entry], batch: int) -> Timing:
    """Applying ``entries[1:]`` at one batch size (namespace creation not timed)."""

    def work(machine: StateMachine, _: Path) -> Timing:
        machine.apply(entries[:1])
        return timed(lambda: apply_all(machine, entries[1:], batch))

    return in_fresh_db(work)


def bench_rebuild(entries: list[Entry]) -> Timing:
    """Rebuilding state from the whole log (batches of 256, as after a restart)."""
    return in_fresh_db(lambda machine, _: timed(lambda: apply_all(machine, entries, 256)))


def bench_reads(entries: list[Entry], keys: list[str]) -> Timing:
    """Point reads through a Reader of the state ``entries`` build."""

    def work(machine: StateMachine, db: Path) -> Timing:
        apply_all(machine, entries, 256)
        with Reader(db) as reader:
            return timed(lambda: [reader.get_entry(NAMESPACE, key) for key in keys])

    return in_fresh_db(work)


def bench_snapshot(entries: list[Entry], tail: list[Entry]) -> tuple[Timing, float, float, int]:
    """A snapshot of the state ``entries`` build, taken while ``tail`` is applied.

    Returns the snapshot's timing, the slowest 64-entry apply during it and without it
    (seconds), and the snapshot file size.
    """

    def work(machine: StateMachine, db: Path) -> tuple[Timing, float, float, int]:
        apply_all(machine, entries, 256)
        store = SnapshotStore(db.parent / "snaps")
        result: list[Timing] = []
        worker = threading.Thread(target=lambda: result.append(timed(lambda: store.create(db))))

        def slowest_batch(until: Callable[[], bool], todo: list[Entry]) -> float:
            worst = 0.0
            while todo and until():
                start = time.perf_counter()
                machine.apply(todo[:64])
                worst = max(worst, time.perf_counter() - start)
                del todo[:64]
            return worst

        todo = list(tail)
        quiet = slowest_batch(lambda: len(todo) > len(tail) // 2, todo)
        worker.start()
        during = slowest_batch(worker.is_alive, todo)
        worker.join()
        latest = store.latest()
        assert latest is not None
        return result[0], during, quiet, latest.path.stat().st_size

    with tempfile.TemporaryDirectory(prefix="bench-snap-") as tmp:
        db = Path(tmp) / "state.db"
        with StateMachine(db) as machine:
            return work(machine, db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--commands",
        type=int,
        default=20_000,
        help="commands per throughput round (batch size 1 uses a quarter)",
    )
    parser.add_argument("--rebuild", type=int, default=100_000, help="entries to rebuild from")
    args = parser.parse_args()

    entries = make_entries(max(args.commands, args.rebuild, KEYS) + TAIL)
    rows: list[tuple[str, str, str]] = []
    for batch in (1, 64, 256):
        count = args.commands // 4 if batch == 1 else args.commands
        t = Timing.median([bench_batch(entries[: count + 1], batch) for _ in range(args.rounds)])
        name = f"apply, batch {batch:>3} ({count:,} puts of 1 KB)"
        rows.append((name, *t.rates(count, "commands/s")))
    t = Timing.median([bench_rebuild(entries[: args.rebuild + 1]) for _ in range(args.rounds)])
    rows.append((f"rebuild from {args.rebuild:,} entries", f"{t.wall:>9.2f} s", f"{t.cpu:>9.2f} s"))
    base, tail = entries[: args.rebuild + 1], entries[args.rebuild + 1 :][:TAIL]
    snaps = [bench_snapshot(base, tail) for _ in range(args.rounds)]
    t = Timing.median([s[0] for s in snaps])
    size = f"{statistics.median(s[3] for s in snaps) / 1e6:.0f} MB"
    rows.append((f"snapshot of that state ({size})", f"{t.wall:>9.2f} s", f"{t.cpu:>9.2f} s"))
    during, quiet = (statistics.median(s[i] for s in snaps) * 1000 for i in (1, 2))
    rows.append(("slowest 64-entry apply during / before it", f"{during:.0f} / {quiet:.0f} ms", ""))
    rng = random.Random(3)
    keys = [f"key-{rng.randrange(KEYS):05d}" for _ in range(50_000)]
    t = Timing.median([bench_reads(entries[: KEYS + 1], keys) for _ in range(args.rounds)])
    rows.append(("point reads (Reader.get_entry)", *t.rates(len(keys), "reads/s")))

    header = ("benchmark", f"wall, median of {args.rounds}", "CPU only")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)))
    print("CPU only = the same work divided by this process's CPU time (shared machines).")


if __name__ == "__main__":
    main()
