"""The simulator must catch every deliberately broken variant (``tests/raft/broken.py``).

The variants break the core (``RawNode`` subclasses) or the Ready plan the runtime and the
simulator both execute (``confman.raft.ready``). Each bug has a targeted fault profile
(``BUG_PROFILES``); within ``SEEDS`` seeds the simulator must report a violation of the
invariant that bug breaks, and the same seed without the bug must pass, so the violation is
the bug's doing and not the schedule's.
"""

from __future__ import annotations

import pytest

from confman.sim.cluster import Cluster
from confman.sim.model import RunResult
from confman.sim.scenarios import BY_NAME
from tests.raft.broken import BUG_PROFILES, KNOWN_BUGS, run_seed, variant

SEEDS = 40

#: The invariants each bug is expected to break (any one of them counts).
EXPECTED: dict[str, set[str]] = {
    # A leader commits an old-term entry by counting replicas: caught by the §5.4.2 rule;
    # if it ever goes on to lose the entry, by the commit-agreement checks.
    "commit_old_terms": {"leader-commit-rule", "committed-lost", "state-machine-safety"},
    # A granted vote leaves before it is durable; after a crash the node votes twice.
    "no_persist_vote": {"durable-state", "election-safety"},
    # A stale node wins an election and overwrites committed entries.
    "vote_without_log_check": {
        "leader-completeness",
        "committed-lost",
        "state-machine-safety",
        "log-truncation",
    },
    # A deposed leader answers ReadIndex from its stale commit index.
    "read_index_no_heartbeat": {"linearizable-read"},
    # A replayed old append cuts off entries the follower already acknowledged.
    "truncate_on_append": {"log-truncation", "committed-lost"},
    # Votes (and append acknowledgements) leave before the write that backs them.
    "ready_send_before_persist": {"durable-state", "election-safety", "term-durability"},
}


def _first_failure(bug: str) -> RunResult | None:
    profile = BUG_PROFILES[bug]
    for seed in range(SEEDS):
        r = run_seed(seed, profile, frozenset({bug}))
        if not r.ok:
            return r
    return None


def test_every_known_bug_has_a_targeted_profile() -> None:
    assert set(BUG_PROFILES) == set(KNOWN_BUGS) == set(EXPECTED)


@pytest.mark.parametrize("bug", sorted(KNOWN_BUGS))
def test_bug_is_caught(bug: str) -> None:
    r = _first_failure(bug)
    assert r is not None, f"{bug}: no violation in {SEEDS} seeds of {BUG_PROFILES[bug]}"
    v = r.violation
    assert v is not None
    assert v.invariant in EXPECTED[bug], r.trace(last=40)
    # The report names the run and ends at the violation.
    assert r.trace().splitlines()[0].startswith(f"seed={r.seed} profile={BUG_PROFILES[bug]}")
    assert r.events[-1][1] == f"VIOLATION {v}"
    # Without the bug the very same schedule is clean.
    clean = run_seed(r.seed, BUG_PROFILES[bug])
    assert clean.ok, clean.trace(last=40)


def test_figure8_loses_a_committed_entry_without_the_rule_check() -> None:
    """With only the outcome checks, commit_old_terms shows its real damage (Figure 8).

    The targeted mix sends one entry per append, so a follower can acknowledge an old-term
    entry without the new leader's no-op; the leader then crashes before its own no-op is
    durable, and a rival with a newer last term wins and overwrites the entry.
    """
    profile = BY_NAME[BUG_PROFILES["commit_old_terms"]]
    bug = variant({"commit_old_terms"})
    lost = {"leader-completeness", "committed-lost", "state-machine-safety"}
    for seed in range(SEEDS):
        r = Cluster(seed, profile, bug, commit_rule=False).run()
        if not r.ok:
            assert r.violation is not None and r.violation.invariant in lost, r.trace(last=40)
            assert Cluster(seed, profile, commit_rule=False).run().ok
            return
    pytest.fail(f"no committed entry lost in {SEEDS} seeds")
