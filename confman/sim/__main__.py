"""Command line of the cluster simulator.

Sweeps (progress every few seconds, then a summary; exit status 1 on any violation)::

    python -m confman.sim                          # 2,000 seeds over every profile
    python -m confman.sim --runs 100000 --workers 2
    python -m confman.sim --profile crashes --runs 500
    python -m confman.sim --bug commit_old_terms --profile bug_figure8 --runs 50

Replay one seed, printing its event log up to the violation (``--verbose`` adds every
message sent); ``--set`` changes a profile setting, ``--shrink`` switches off every fault
kind the violation does not need and prints the command for the shorter schedule::

    python -m confman.sim --seed 1234 --trace
    python -m confman.sim --seed 7 --profile bug_reorder --bug truncate_on_append --trace
    python -m confman.sim --seed 4 --profile pauses --set pause_catch_up=false --shrink

A run depends on nothing but its seed (not on ``PYTHONHASHSEED``, the machine or the
process), so a seed found by a sweep on two workers replays the same in a test.
"""

from __future__ import annotations

import argparse
import sys

from confman.raft.config import KNOWN_BUGS
from confman.sim.runner import Summary, run_seed, shrink, sweep
from confman.sim.scenarios import PROFILES


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m confman.sim", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=2000, help="number of seeds to sweep")
    ap.add_argument("--start", type=int, default=0, help="first seed of the sweep")
    ap.add_argument("--workers", type=int, default=1, help="processes for the sweep")
    ap.add_argument("--seed", type=int, help="run this one seed only")
    ap.add_argument("--trace", action="store_true", help="print the seed's event log")
    ap.add_argument("--verbose", action="store_true", help="trace every message sent")
    ap.add_argument("--last", type=int, default=60, help="events shown for a failing seed")
    ap.add_argument("--profile", choices=[p.name for p in PROFILES], help="fault profile")
    ap.add_argument(
        "--bug",
        action="append",
        default=[],
        choices=sorted(KNOWN_BUGS),
        help="switch on a deliberate bug of the core (repeatable)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile setting, e.g. crash=0 or net.drop=0.2 (repeatable)",
    )
    ap.add_argument(
        "--shrink",
        action="store_true",
        help="with --seed: switch off the fault kinds the violation does not need",
    )
    ap.add_argument(
        "--no-commit-rule",
        action="store_true",
        help="with --seed: do not check the §5.4.2 commit rule itself, only outcomes",
    )
    ap.add_argument("--list-profiles", action="store_true", help="list the fault profiles")
    return ap


def _one(args: argparse.Namespace, bugs: frozenset[str]) -> int:
    settings = tuple(args.set)
    if args.shrink:
        settings, r = shrink(args.seed, args.profile, bugs, settings)
        if r.violation is not None:
            line = " ".join(f"--set {s}" for s in settings)
            bug_args = "".join(f" --bug {b}" for b in sorted(bugs))
            print(
                f"shrunk: python -m confman.sim --seed {args.seed} --profile {r.profile}"
                f"{bug_args} {line} --trace"
            )
    r = run_seed(args.seed, args.profile, bugs, args.verbose, settings, not args.no_commit_rule)
    if args.trace:
        print(r.trace())
    elif r.violation is not None:
        print(r.trace(last=args.last))
    st = r.stats
    print(
        f"seed {r.seed} [{r.profile}]: {'ok' if r.ok else 'VIOLATION'}; {st.ticks} ticks, "
        f"{st.messages} messages, {st.elections} leaders, {st.committed} committed"
    )
    return 0 if r.ok else 1


def _progress(s: Summary) -> None:
    rate = s.runs / s.seconds if s.seconds else 0.0
    print(f"  {s.runs} runs, {len(s.failures)} violations, {rate:.0f} runs/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bugs = frozenset(args.bug)
    if args.list_profiles:
        for i, p in enumerate(PROFILES):
            print(f"{i:2d} {p.name}: {p.nodes} nodes, {p.fault_ticks} fault ticks")
        return 0
    if args.seed is not None:
        return _one(args, bugs)
    seeds = range(args.start, args.start + args.runs)
    what = args.profile or "all profiles"
    print(f"sweeping seeds {seeds.start}..{seeds.stop - 1} ({what}) on {args.workers} worker(s)")
    s = sweep(seeds, args.profile, bugs, args.workers, _progress)
    print(s.report(bugs))
    for f in sorted(s.failures, key=lambda f: f.seed)[:1]:
        print(f"\nfirst failing seed {f.seed}:")
        print(run_seed(f.seed, f.profile, bugs).trace(last=args.last))
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
