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
import time
from collections.abc import Callable
from pathlib import Path

from confman.node.state.commands import PutConfig, PutNamespace, Request, encode_request
from confman.node.state.machine import StateMachine
from confman.node.state.queries import Reader
from confman.raft.types import Entry

KEYS = 10_000
VALUE_BYTES = 1024
NAMESPACE = "bench"


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


def apply_all(machine: StateMachine, entries: list[Entry], batch: int) -> float:
    """Seconds to apply ``entries`` in batches of ``batch``."""
    start = time.perf_counter()
    for lo in range(0, len(entries), batch):
        machine.apply(entries[lo : lo + batch])
    return time.perf_counter() - start


def in_fresh_db(work: Callable[[StateMachine, Path], float]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as tmp:
        db = Path(tmp) / "state.db"
        machine = StateMachine(db)
        try:
            return work(machine, db)
        finally:
            machine.close()


def bench_batch(entries: list[Entry], batch: int) -> float:
    """Commands per second at one batch size (namespace creation not timed)."""

    def work(machine: StateMachine, _: Path) -> float:
        machine.apply(entries[:1])
        return (len(entries) - 1) / apply_all(machine, entries[1:], batch)

    return in_fresh_db(work)


def bench_rebuild(entries: list[Entry]) -> float:
    """Seconds to rebuild state from the whole log (batches of 256, as after a restart)."""
    return in_fresh_db(lambda machine, _: apply_all(machine, entries, 256))


def bench_reads(entries: list[Entry], reads: int) -> float:
    """Point reads per second through a Reader, keys in random order."""

    def work(machine: StateMachine, db: Path) -> float:
        apply_all(machine, entries, 256)
        rng = random.Random(3)
        keys = [f"key-{rng.randrange(KEYS):05d}" for _ in range(reads)]
        with Reader(db) as reader:
            start = time.perf_counter()
            for key in keys:
                reader.get_entry(NAMESPACE, key)
            return reads / (time.perf_counter() - start)

    return in_fresh_db(work)


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

    entries = make_entries(max(args.commands, args.rebuild, KEYS))
    rows: list[tuple[str, str]] = []
    for batch in (1, 64, 256):
        count = args.commands // 4 if batch == 1 else args.commands
        sample = entries[: count + 1]
        figures = [bench_batch(sample, batch) for _ in range(args.rounds)]
        rows.append(
            (
                f"apply, batch {batch:>3} ({count:,} puts of 1 KB)",
                f"{statistics.median(figures):>10,.0f} commands/s",
            )
        )
    rebuild = entries[: args.rebuild + 1]
    seconds = [bench_rebuild(rebuild) for _ in range(args.rounds)]
    rows.append(
        (f"rebuild from {args.rebuild:,} entries", f"{statistics.median(seconds):>10.2f} s")
    )
    reads = [bench_reads(entries[: KEYS + 1], 50_000) for _ in range(args.rounds)]
    rows.append(("point reads (Reader.get_entry)", f"{statistics.median(reads):>10,.0f} reads/s"))

    width = max(len(name) for name, _ in rows)
    print(f"{'benchmark':<{width}}  median of {args.rounds}")
    print(f"{'-' * width}  {'-' * 22}")
    for name, figure in rows:
        print(f"{name:<{width}}  {figure}")


if __name__ == "__main__":
    main()
