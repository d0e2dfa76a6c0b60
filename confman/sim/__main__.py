"""Command line of the cluster simulator.

Sweeps (progress every few seconds, then a summary; exit status 1 on any violation)::

    python -m confman.sim                          # 2,000 seeds over every profile
    python -m confman.sim --runs 100000 --workers 2
    python -m confman.sim --profile crashes --runs 500

Replay one seed, printing its event log up to the violation (``--verbose`` adds every
message sent); ``--set`` changes a profile setting, ``--shrink`` switches off every fault
kind the violation does not need and prints the command for the shorter schedule::

    python -m confman.sim --seed 1234 --trace
    python -m confman.sim --seed 7 --profile bug_reorder --trace
    python -m confman.sim --seed 4 --profile pauses --set pause_catch_up=false --shrink

A run depends on nothing but its seed (not on ``PYTHONHASHSEED``, the machine or the
process), so a seed found by a sweep on two workers replays the same in a test.

The shipped simulator runs the shipped core only. Hunting the deliberately broken variants
(the ``bug_*`` profiles' purpose) is a test tool with the same options plus ``--bug``::

    python -m tests.raft.hunt --bug commit_old_terms --profile bug_figure8 --runs 50
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection

from confman.sim.model import CORRECT, Variant
from confman.sim.runner import Summary, run_seed, shrink, sweep
from confman.sim.scenarios import PROFILES

PROG = "python -m confman.sim"


def _parser(prog: str, bugs: Collection[str]) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--runs", type=int, default=2000, help="number of seeds to sweep")
    ap.add_argument("--start", type=int, default=0, help="first seed of the sweep")
    ap.add_argument("--workers", type=int, default=1, help="processes for the sweep")
    ap.add_argument("--seed", type=int, help="run this one seed only")
    ap.add_argument("--trace", action="store_true", help="print the seed's event log")
    ap.add_argument("--verbose", action="store_true", help="trace every message sent")
    ap.add_argument("--last", type=int, default=60, help="events shown for a failing seed")
    ap.add_argument("--profile", choices=[p.name for p in PROFILES], help="fault profile")
    if bugs:
        ap.add_argument(
            "--bug",
            action="append",
            default=[],
            choices=sorted(bugs),
            help="run a deliberately broken variant (repeatable)",
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


def _one(args: argparse.Namespace, variant: Variant, prog: str) -> int:
    settings = tuple(args.set)
    if args.shrink:
        settings, r = shrink(args.seed, args.profile, variant, settings)
        if r.violation is not None:
            line = " ".join(f"--set {s}" for s in settings)
            bug_args = "".join(f" --bug {b}" for b in variant.bugs)
            print(
                f"shrunk: {prog} --seed {args.seed} --profile {r.profile}{bug_args} {line} --trace"
            )
    r = run_seed(args.seed, args.profile, variant, args.verbose, settings, not args.no_commit_rule)
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


def main(
    argv: list[str] | None = None,
    *,
    prog: str = PROG,
    bugs: Collection[str] = (),
    variant_for: Callable[[frozenset[str]], Variant] | None = None,
) -> int:
    """The command line; a test tool passes ``bugs`` and ``variant_for`` to offer ``--bug``."""
    args = _parser(prog, bugs).parse_args(argv)
    chosen = frozenset(getattr(args, "bug", ()))
    variant = variant_for(chosen) if variant_for is not None and chosen else CORRECT
    if args.list_profiles:
        for i, p in enumerate(PROFILES):
            print(f"{i:2d} {p.name}: {p.nodes} nodes, {p.fault_ticks} fault ticks")
        return 0
    if args.seed is not None:
        return _one(args, variant, prog)
    seeds = range(args.start, args.start + args.runs)
    what = args.profile or "all profiles"
    print(f"sweeping seeds {seeds.start}..{seeds.stop - 1} ({what}) on {args.workers} worker(s)")
    s = sweep(seeds, args.profile, variant, args.workers, _progress)
    print(s.report(variant, prog=prog))
    for f in sorted(s.failures, key=lambda f: f.seed)[:1]:
        print(f"\nfirst failing seed {f.seed}:")
        print(run_seed(f.seed, f.profile, variant).trace(last=args.last))
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
