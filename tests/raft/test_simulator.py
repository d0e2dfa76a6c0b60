"""The deterministic cluster simulator: its parts, and the core under every fault profile.

The sweep tests are the main test of the Raft core: every seed runs one fault profile
(3 or 5 nodes) and every safety invariant is checked after every event.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import replace

import pytest

from confman.raft.storage import MemoryStorage
from confman.raft.types import ConfState, Entry, HardState, Message, MessageType
from confman.sim.checks import Checker, Violation, chain_digest
from confman.sim.cluster import Cluster
from confman.sim.liveness import LIVE_PROPOSALS
from confman.sim.network import NetFaults, Network
from confman.sim.runner import SHRINKABLE, run_seed, shrink, sweep
from confman.sim.scenarios import BY_NAME, overridden
from tests.raft import broken

MT = MessageType

#: The default sweep: this many seeds in chunks (so ``-n 2`` can share them out).
SWEEP_SEEDS = 2000
SWEEP_CHUNK = 100


def _msg(frm: str = "n1", to: str = "n2", index: int = 0) -> Message:
    return Message(MT.HEARTBEAT, to, frm, term=1, index=index)


def _drain(net: Network, now: int) -> list[Message]:
    out = []
    while (m := net.next_due(now)) is not None:
        out.append(m)
    return out


# ---------------------------------------------------------------------------- network
def test_perfect_network_delivers_everything_in_order() -> None:
    net = Network(random.Random(1))
    for i in range(5):
        assert net.send(_msg(index=i), now=0)
    assert [m.index for m in _drain(net, 0)] == [0, 1, 2, 3, 4]
    assert net.stats.delivered == 5 and net.in_flight() == 0


def test_delays_hold_messages_until_due_and_reorder_them() -> None:
    net = Network(random.Random(7), NetFaults(delay_min=1, delay_max=5))
    for i in range(50):
        net.send(_msg(index=i), now=0)
    assert _drain(net, 0) == []
    got = [m.index for t in range(1, 6) for m in _drain(net, t)]
    assert sorted(got) == list(range(50))
    assert got != sorted(got)  # reordered


def test_drop_and_duplicate_rates_are_roughly_honoured() -> None:
    net = Network(random.Random(3), NetFaults(drop=0.2, dup=0.1))
    for i in range(5000):
        net.send(_msg(index=i), now=0)
    got = _drain(net, 0)
    assert 900 < net.stats.dropped < 1100
    assert 300 < net.stats.duplicated < 500
    assert len(got) == 5000 - net.stats.dropped + net.stats.duplicated


def test_same_seed_same_fates() -> None:
    def fates(seed: int) -> list[tuple[int, int]]:
        net = Network(random.Random(seed), NetFaults(drop=0.3, dup=0.2, delay_max=4))
        for i in range(200):
            net.send(_msg(index=i), now=0)
        return [(t, m.index) for t in range(5) for m in _drain(net, t)]

    assert fates(11) == fates(11)
    assert fates(11) != fates(12)


def test_partition_blocks_both_directions_until_healed() -> None:
    net = Network(random.Random(1))
    net.partition([["n1"], ["n2", "n3"]])
    assert not net.send(_msg("n1", "n2"), 0)
    assert not net.send(_msg("n3", "n1"), 0)
    assert net.send(_msg("n2", "n3"), 0)
    net.heal()
    assert net.send(_msg("n1", "n2"), 0)
    assert len(_drain(net, 0)) == 2


def test_one_way_block_and_messages_in_flight_when_cut() -> None:
    net = Network(random.Random(1), NetFaults(delay_min=2, delay_max=2))
    assert net.send(_msg("n1", "n2"), 0)  # in flight when the link is cut
    net.block("n1", "n2")
    assert net.send(_msg("n2", "n1"), 0)  # the other direction still works
    assert [m.frm for m in _drain(net, 2)] == ["n2"]
    assert net.stats.blocked == 1


def test_append_loss_hits_only_messages_with_entries() -> None:
    net = Network(random.Random(1), NetFaults(drop_append=1.0))
    app = Message(MT.APPEND, "n2", "n1", term=1, entries=(Entry(1, 1),))
    assert net.send(app, 0) and net.send(_msg(), 0)
    assert [m.type for m in _drain(net, 0)] == [MT.HEARTBEAT]


# ---------------------------------------------------------------------------- checker
def _storage(*terms: int) -> MemoryStorage:
    st = MemoryStorage(ConfState(voters=("n1", "n2", "n3")))
    st.append([Entry(t, i + 1, data=b"e%d" % (i + 1)) for i, t in enumerate(terms)])
    return st


def test_election_safety() -> None:
    chk = Checker()
    assert chk.leader("n1", 2)
    assert not chk.leader("n1", 2)
    assert chk.leader("n2", 3)
    with pytest.raises(Violation) as e:
        chk.leader("n3", 2)
    assert e.value.invariant == "election-safety" and e.value.term == 2
    assert e.value.nodes == ("n1", "n3")


def test_log_matching_detects_different_entry_and_different_history() -> None:
    chk = Checker()
    a = _storage(1, 1, 2)
    chk.logged("n1", a, [Entry(1, 1, data=b"e1"), Entry(1, 2, data=b"e2"), Entry(2, 3, data=b"e3")])
    b = _storage(1, 1)
    b.append([Entry(2, 3, data=b"other")])
    with pytest.raises(Violation) as e:
        chk.logged("n2", b, [Entry(2, 3, data=b"other")])
    assert e.value.invariant == "log-matching" and e.value.index == 3
    c = _storage(1, 2)  # same (3, term 2) entry but a different predecessor term
    c.append([Entry(2, 3, data=b"e3")])
    with pytest.raises(Violation, match="preceding term"):
        chk.logged("n3", c, [Entry(2, 3, data=b"e3")])
    d = _storage(1, 1, 2)  # an identical log is fine
    chk.logged("n3", d, [Entry(1, 1, data=b"e1"), Entry(1, 2, data=b"e2"), Entry(2, 3, data=b"e3")])


def test_apply_order_and_state_machine_safety() -> None:
    chk = Checker()
    e1, e2 = Entry(1, 1, data=b"a"), Entry(1, 2, data=b"b")
    d1 = chain_digest(0, e1)
    chk.applied("n1", e1, 0, d1)
    chk.applied("n1", e2, 1, chain_digest(d1, e2))
    chk.applied("n2", e1, 0, d1)
    with pytest.raises(Violation, match="gap"):
        chk.applied("n3", e2, 0, 0)
    with pytest.raises(Violation, match="repeat"):
        chk.applied("n2", e1, 1, d1)
    other = Entry(2, 2, data=b"c")
    with pytest.raises(Violation) as e:
        chk.applied("n2", other, 1, chain_digest(d1, other))
    assert e.value.invariant == "state-machine-safety" and e.value.index == 2


def test_duplicate_payload_and_snapshot_state_mismatch() -> None:
    chk = Checker()
    e1 = Entry(1, 1, data=b"x")
    chk.applied("n1", e1, 0, chain_digest(0, e1))
    e2 = Entry(1, 2, data=b"x")
    with pytest.raises(Violation, match="duplicate-apply"):
        chk.applied("n1", e2, 1, chain_digest(chain_digest(0, e1), e2))
    chk.restored("n2", 1, 1, chain_digest(0, e1))
    with pytest.raises(Violation, match="snapshot state differs"):
        chk.restored("n3", 1, 1, 12345)


def test_commit_index_monotonic_and_restart_floor() -> None:
    chk = Checker()
    log = _storage(1, 1, 1)
    chk.commit("n1", 2, 1, log)
    chk.commit("n1", 3, 1, log)
    with pytest.raises(Violation, match="went back"):
        chk.commit("n1", 2, 1, log)
    chk.restarted("n1", HardState(1, None, 2), 2)
    chk.commit("n1", 2, 1, log)  # a new incarnation may restart at its persisted commit
    with pytest.raises(Violation, match="below its persisted commit"):
        chk.restarted("n2", HardState(1, None, 3), 1)


def test_commit_terms_must_agree_and_leader_commit_rule() -> None:
    chk = Checker()
    chk.commit("n1", 2, 2, _storage(1, 2), leader=True)
    with pytest.raises(Violation) as e:
        chk.commit("n2", 2, 3, _storage(1, 3))
    assert e.value.invariant == "committed-lost" and e.value.index == 2
    with pytest.raises(Violation, match="leader-commit-rule"):
        chk.commit("n3", 2, 3, _storage(1, 2), leader=True)
    Checker(commit_rule=False).commit("n3", 2, 3, _storage(1, 2), leader=True)


def test_leader_completeness() -> None:
    chk = Checker()
    chk.commit("n1", 3, 2, _storage(1, 2, 2))
    chk.leader_completeness("n2", 2, _storage(1))  # committed in its own term: not checked
    chk.leader_completeness("n2", 3, _storage(1, 2, 2, 3))
    with pytest.raises(Violation, match="log ends at 2"):
        chk.leader_completeness("n3", 3, _storage(1, 2))
    with pytest.raises(Violation) as e:
        chk.leader_completeness("n3", 4, _storage(1, 3, 3))
    assert e.value.invariant == "leader-completeness" and e.value.index == 2


def test_durable_state_checks() -> None:
    chk = Checker()
    chk.hard_state("n1", HardState(2, "n2", 0))
    chk.vote_sent("n1", 2, "n2", HardState(2, "n2", 0))
    with pytest.raises(Violation, match="vote for n3 sent"):
        chk.vote_sent("n1", 2, "n3", HardState(2, "n2", 0))
    with pytest.raises(Violation, match="vote for n3 sent"):
        chk.vote_sent("n1", 2, "n3", HardState(1, "n3", 0))
    chk.vote_sent("n1", 2, "n3", HardState(3, "n1", 0))  # a later term is durable: safe
    with pytest.raises(Violation, match="vote changed"):
        chk.hard_state("n1", HardState(2, "n3", 0))
    with pytest.raises(Violation, match="term went back"):
        chk.hard_state("n1", HardState(1, None, 0))
    chk.hard_state("n1", HardState(3, None, 5))
    with pytest.raises(Violation, match="persisted commit went back"):
        chk.hard_state("n1", HardState(3, None, 4))


def test_appends_may_replace_only_uncommitted_conflicts() -> None:
    chk = Checker()
    st = _storage(1, 1, 2, 2)
    chk.before_append("n1", st, [Entry(1, 2), Entry(3, 3)], commit=2)  # conflict at 3 > 2
    chk.before_append("n1", st, [Entry(2, 4), Entry(2, 5)], commit=4)  # plain extension
    with pytest.raises(Violation) as e:
        chk.before_append("n1", st, [Entry(1, 2)], commit=1)
    assert e.value.invariant == "log-truncation"
    with pytest.raises(Violation) as e:
        chk.before_append("n1", st, [Entry(3, 3)], commit=3)
    assert e.value.invariant == "committed-lost" and e.value.index == 3


def test_reads_must_not_miss_committed_entries() -> None:
    chk = Checker()
    chk.commit("n1", 5, 1, _storage(1, 1, 1, 1, 1))
    floor = chk.read_floor()
    assert floor == 5
    chk.read_result("n2", "ReadIndex", 5, floor, 1)
    with pytest.raises(Violation, match="linearizable-read"):
        chk.read_result("n2", "lease", 4, floor, 1)


def test_violation_names_invariant_nodes_term_and_index() -> None:
    v = Violation("log-matching", "detail", ("n1", "n2"), 3, 7)
    assert str(v) == "log-matching: detail [nodes=n1,n2 term=3 index=7]"


# ---------------------------------------------------------------------------- cluster
def test_a_seed_replays_identically() -> None:
    a = run_seed(5, "chaos")
    b = run_seed(5, "chaos")
    assert a.events == b.events and a.stats == b.stats


def test_cli_replays_a_failing_seed_in_another_process() -> None:
    """``--seed N --trace`` in a fresh process (other hash seed) prints the same trace."""
    bug = "read_index_no_heartbeat"
    r = next(r for s in range(30) if not (r := broken.run_seed(s, "bug_stale_read", {bug})).ok)
    cmd = [
        sys.executable,
        "-m",
        "tests.raft.hunt",  # confman.sim's command line, with the test-only --bug
        "--seed",
        str(r.seed),
        "--profile",
        "bug_stale_read",
        "--bug",
        bug,
        "--trace",
    ]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=root)
    assert out.returncode == 1, out.stderr
    assert r.trace() in out.stdout


def test_calm_cluster_elects_commits_and_converges() -> None:
    r = run_seed(0, "calm")
    assert r.ok, r.trace(last=40)
    assert r.stats.committed > LIVE_PROPOSALS and r.stats.elections >= 1
    assert 0 <= r.stats.leader_after_calm <= 8 * BY_NAME["calm"].election[1]
    assert r.stats.reads_checked > 0 and r.stats.lease_reads > 0


def test_stale_reads_are_reported_with_a_trace() -> None:
    bugs = frozenset({"read_index_no_heartbeat"})
    r = next(r for s in range(30) if not (r := broken.run_seed(s, "bug_stale_read", bugs)).ok)
    assert r.violation is not None and r.violation.invariant == "linearizable-read"
    text = r.trace()
    assert f"seed={r.seed} profile=bug_stale_read bugs=read_index_no_heartbeat" in text
    assert text.rstrip().endswith(f"VIOLATION {r.violation}")
    assert r.events[-1][1].startswith("VIOLATION")


def test_lease_reads_need_the_runtime_to_catch_up_ticks_after_a_pause() -> None:
    """A frozen leader whose missed ticks are lost serves stale lease reads; caught up, not."""
    lost = replace(BY_NAME["pauses"], pause_catch_up=False)
    bad = [r for s in range(40) if not (r := Cluster(s, lost).run()).ok]
    assert bad and {r.violation.invariant for r in bad if r.violation} == {"linearizable-read"}
    for r in bad[:5]:
        assert run_seed(r.seed, "pauses").ok


def test_profile_settings_override_fields_by_type() -> None:
    p = overridden(
        BY_NAME["chaos"], ("crash=0", "pause_catch_up=false", "election=10,14", "net.drop=0.5")
    )
    assert (p.crash, p.pause_catch_up, p.election, p.net.drop) == (0.0, False, (10, 14), 0.5)
    assert p.nodes == BY_NAME["chaos"].nodes and p.net.dup == BY_NAME["chaos"].net.dup
    for bad in ("nope=1", "name=x", "crash", "pre_vote=maybe"):
        with pytest.raises(ValueError):
            overridden(BY_NAME["chaos"], (bad,))


def test_shrink_switches_off_fault_kinds_the_violation_does_not_need() -> None:
    bugs = frozenset({"vote_without_log_check"})
    first = next(r for s in range(40) if not (r := broken.run_seed(s, "bug_stale_log", bugs)).ok)
    assert first.violation is not None
    seed = first.seed
    settings, r = shrink(seed, "bug_stale_log", broken.variant(bugs))
    assert r.violation is not None and r.violation.invariant == first.violation.invariant
    assert settings and all(s.endswith("=0") and s[:-2] in SHRINKABLE for s in settings)
    again = broken.run_seed(seed, "bug_stale_log", bugs, settings=settings)
    assert again.events == r.events


def test_membership_changes_restart_and_remove_nodes() -> None:
    r = run_seed(7, "membership")
    assert r.ok, r.trace(last=40)
    assert r.stats.conf_changes > 0


def test_snapshots_are_installed() -> None:
    s = sweep(range(20), profile="snapshots")
    assert not s.failures, s.report()
    assert s.totals.snapshots_sent > 0


@pytest.mark.parametrize("start", range(0, SWEEP_SEEDS, SWEEP_CHUNK))
def test_sweep_has_no_violation(start: int) -> None:
    """Every profile in rotation, SWEEP_SEEDS seeds in all: no invariant may break."""
    s = sweep(range(start, start + SWEEP_CHUNK))
    detail = ""
    if s.failures:
        f = min(s.failures, key=lambda f: f.seed)
        detail = "\n" + run_seed(f.seed, f.profile).trace(last=60)
    assert not s.failures, s.report() + detail
    t = s.totals
    # The chunk really exercised every kind of fault and operation.
    assert t.crashes and t.partitions and t.snapshots_sent and t.conf_changes, s.report()
    assert t.transfers and t.reads_checked and t.lease_reads, s.report()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_long_sweep_has_no_violation() -> None:
    """10,000 further seeds on two processes (about 5-10 minutes)."""
    s = sweep(range(SWEEP_SEEDS, SWEEP_SEEDS + 10000), workers=2)
    assert not s.failures, s.report()


def test_cluster_starts_with_the_initial_members() -> None:
    c = Cluster(1, BY_NAME["partitions5"])
    assert list(c.nodes) == ["n1", "n2", "n3", "n4", "n5"]
    assert c.universe == ("n1", "n2", "n3", "n4", "n5", "n6", "n7")
