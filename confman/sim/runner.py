"""Running many seeded simulations, on several processes, and summarising them."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

from confman.sim.cluster import Cluster
from confman.sim.model import CORRECT, RunResult, RunStats, Variant
from confman.sim.scenarios import overridden, profile_for

#: Fault and workload settings ``shrink`` tries to switch off, one at a time.
SHRINKABLE = (
    "membership",
    "transfer",
    "campaign",
    "pause",
    "partition",
    "crash",
    "crash_after_vote",
    "kill_new_leader",
    "unsent_leader",
    "crash_in_window",
    "send_first",
    "snapshot_every",
    "drift",
    "read",
    "lease",
    "batch",
    "net.drop",
    "net.dup",
    "net.slow",
    "net.drop_append",
    "net.snapshot_delay",
)


def run_seed(
    seed: int,
    profile: str | None = None,
    variant: Variant = CORRECT,
    verbose: bool = False,
    settings: tuple[str, ...] = (),
    commit_rule: bool = True,
) -> RunResult:
    """Run one seed (its profile comes from the rotation unless named; see ``overridden``)."""
    p = overridden(profile_for(seed, profile), settings)
    return Cluster(seed, p, variant, verbose=verbose, commit_rule=commit_rule).run()


def shrink(
    seed: int, profile: str | None, variant: Variant = CORRECT, settings: tuple[str, ...] = ()
) -> tuple[tuple[str, ...], RunResult]:
    """Switch off every fault kind the failure does not need (greedily, one at a time).

    Returns the settings of the simplest schedule found that still breaks the same
    invariant, and its run. The schedule changes as kinds go, but its trace is shorter.
    """
    best = run_seed(seed, profile, variant, settings=settings)
    if best.violation is None:
        return settings, best
    want = best.violation.invariant
    p = overridden(profile_for(seed, profile), settings)
    for knob in SHRINKABLE:
        holder, name = (p.net, knob[4:]) if knob.startswith("net.") else (p, knob)
        if not getattr(holder, name):
            continue
        trial = (*settings, f"{knob}=0")
        r = run_seed(seed, profile, variant, settings=trial)
        if r.violation is not None and r.violation.invariant == want:
            settings, best = trial, r
    return settings, best


@dataclass(slots=True)
class Outcome:
    """What a worker sends back for one run: small, so it pickles fast."""

    seed: int
    profile: str
    violation: str | None
    invariant: str | None
    stats: RunStats


@dataclass(slots=True)
class Summary:
    """Totals of a sweep."""

    runs: int = 0
    seconds: float = 0.0
    failures: list[Outcome] = field(default_factory=list)
    by_profile: Counter[str] = field(default_factory=Counter)
    totals: RunStats = field(default_factory=RunStats)
    max_leader_after_calm: int = 0

    def add(self, o: Outcome) -> None:
        self.runs += 1
        self.by_profile[o.profile] += 1
        if o.violation is not None:
            self.failures.append(o)
        tot = self.totals
        for f in fields(RunStats):
            if f.name != "leader_after_calm":
                setattr(tot, f.name, getattr(tot, f.name) + getattr(o.stats, f.name))
        self.max_leader_after_calm = max(self.max_leader_after_calm, o.stats.leader_after_calm)

    def report(
        self, variant: Variant = CORRECT, show: int = 10, prog: str = "python -m confman.sim"
    ) -> str:
        """A human-readable summary with replay commands (``prog ...``) for failing seeds."""
        t = self.totals
        rate = self.runs / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.runs} runs in {self.seconds:.1f} s ({rate:.0f} runs/s), "
            f"{len(self.failures)} with a violation",
            f"virtual ticks {t.ticks}, messages {t.messages} ({t.delivered} delivered), "
            f"leaders elected {t.elections}, entries committed {t.committed}",
            f"crashes {t.crashes}, partitions {t.partitions}, snapshots sent {t.snapshots_sent}, "
            f"conf changes {t.conf_changes}, transfers {t.transfers}, "
            f"ReadIndex checked {t.reads_checked}, lease reads {t.lease_reads}",
            f"slowest leader election after faults stopped: {self.max_leader_after_calm} ticks",
            "profiles: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_profile.items())),
        ]
        if self.failures:
            kinds = Counter(f.invariant for f in self.failures)
            lines.append("violations: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
            bug_args = "".join(f" --bug {b}" for b in variant.bugs)
            for f in sorted(self.failures, key=lambda f: f.seed)[:show]:
                lines.append(f"  seed {f.seed} [{f.profile}] {f.violation}")
                lines.append(
                    f"    replay: {prog} --seed {f.seed} --profile {f.profile}{bug_args} --trace"
                )
        return "\n".join(lines)


def _outcome(args: tuple[int, str | None, Variant]) -> Outcome:
    seed, profile, variant = args
    try:
        r = run_seed(seed, profile, variant)
    except Exception as exc:  # a simulator bug: report the seed instead of ending the sweep
        name = profile_for(seed, profile).name
        return Outcome(seed, name, f"sim-error: {exc!r}", "sim-error", RunStats())
    v = r.violation
    return Outcome(seed, r.profile, str(v) if v else None, v.invariant if v else None, r.stats)


def outcomes(
    seeds: range, profile: str | None, variant: Variant, workers: int
) -> Iterator[Outcome]:
    """Run ``seeds`` on ``workers`` processes (1: in this process); order not kept."""
    jobs = ((s, profile, variant) for s in seeds)
    if workers <= 1:
        yield from map(_outcome, jobs)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_outcome, jobs, chunksize=16)


def sweep(
    seeds: range,
    profile: str | None = None,
    variant: Variant = CORRECT,
    workers: int = 1,
    progress: Callable[[Summary], None] | None = None,
    every: float = 5.0,
) -> Summary:
    """Run every seed and summarise; ``progress`` is called about every ``every`` seconds."""
    summary = Summary()
    start = last = time.perf_counter()
    for o in outcomes(seeds, profile, variant, workers):
        summary.add(o)
        now = time.perf_counter()
        if progress is not None and now - last >= every:
            summary.seconds = now - start
            progress(summary)
            last = now
    summary.seconds = time.perf_counter() - start
    return summary
