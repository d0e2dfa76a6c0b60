"""Profile the leader and one follower with py-spy while wrk writes with N clients.

    .venv/bin/pip install py-spy      # a profiling tool, not a project dependency
    .venv/bin/python -m benchmarks.profile_write --clients 1 --out /tmp/prof

Starts the cluster ``benchmarks.compare`` uses, pre-loads 1,000 keys, then samples both
processes at 200 Hz for the run and writes ``leader-N.txt`` and ``follower-N.txt`` (py-spy's
raw collapsed stacks) into ``--out``, and prints the rate wrk measured (lower than without
the profiler) and the top frames by samples.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
from pathlib import Path

from benchmarks.compare import drivers
from benchmarks.compare.systems import make_system, temp_base


def top_frames(path: Path, n: int = 12) -> list[tuple[int, str]]:
    """The innermost frames with most samples in a py-spy raw file."""
    leaf: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf[re.sub(r" \(.*?:\d+\)", "", stack.split(";")[-1])] += int(count)
    return [(c, f) for f, c in leaf.most_common(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("/tmp/confman-profile"))
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(".venv/bin/py-spy"))
    args.out.mkdir(parents=True, exist_ok=True)
    base = temp_base()
    system = make_system("confman", base)
    try:
        system.start()
        drivers.preload(system, 1000, 1024)
        lead = system.leader_url()
        pids = system.pids()
        lead_id = next(n for n in pids if system.c.url(n).rstrip("/") == lead)  # type: ignore[attr-defined]
        fol_id = next(n for n in pids if n != lead_id)
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "-p",
                    str(pids[n]),
                    "-d",
                    str(args.seconds - 2),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(args.out / f"{role}-{args.clients}.txt"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for n, role in ((lead_id, "leader"), (fol_id, "follower"))
        ]
        wl = drivers.Workload("write", "write", spread=False)
        run = drivers.run_wrk(system, wl, args.clients, args.seconds, 1000, 1024, 1)
        summary = run.summary()
        print(f"{args.clients} clients: {run.rate:,.0f} req/s, p50 {summary.get('p50_ms')} ms")
        for p in spies:
            p.wait(timeout=60)
    finally:
        system.close()
        shutil.rmtree(base, ignore_errors=True)
    for role in ("leader", "follower"):
        path = args.out / f"{role}-{args.clients}.txt"
        if path.exists():
            print(f"{role}: top frames by samples")
            for count, frame in top_frames(path):
                print(f"  {count:6d}  {frame}")


if __name__ == "__main__":
    main()
