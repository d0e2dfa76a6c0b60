"""One verify run: cluster, workload, nemesis, final heal and settle, checks, report.

`run_verify(RunConfig(...))` starts a fresh `ProcessCluster` (or, with ``targets``, uses an
existing cluster: then no nemesis and nothing destructive: the run works in namespaces of its
own, ``vf<seed>x<n>-<slot>-<generation>``, and deletes them at the end), runs the workload for
``duration`` seconds while the nemesis injects its seeded faults, heals everything, waits
until every node has applied the same index, reads every key linearizably from every node,
collects every node's state and checks:

1. ``linearizable``: writes, CAS, deletes and linearizable/lease reads form a linearizable
   history per key (`VersionedMapModel`); the checker's explanation when not;
2. ``acknowledged``: on every node's audit trail every acknowledged write and CAS appears
   with the version the client was told, in real-time order, no value twice, no value
   nobody wrote, at least as many deletes as were acknowledged, and the final entry is the
   last audited state;
3. ``identical``: every node's namespaces, entries and audit trails are the same;
4. ``http``: no 5xx other than the documented 503/504 (others are counted and listed);
5. ``local-reads``: local reads returned only states that some node's audit trail shows;
6. ``crashes`` (no node exited by itself), ``settle`` (one leader and equal applied
   indices after the final heal), ``available`` (final linearizable reads succeed on every
   node), ``progress`` (some write was acknowledged: otherwise nothing was tested).

Exit status of `RunResult.exit_code`: 0 valid, 1 a violation, 2 inconclusive (a check timed
out or the run made no progress).

Short runs, as CI does (3 runs of 30 s, one per nemesis mix)::

    scripts/verify-short

A soak of >= 20 runs of >= 60 s cycling through every nemesis kind (about 30 minutes on two
cores; each run writes its report under ``verify-reports/``)::

    VERIFY_RUNS=24 VERIFY_DURATION=60 scripts/verify-short

which is the same as, per run ``i`` (nemeses ``kill``, ``pause``, ``partition``,
``partition:isolate-leader+cut``, ``kill,pause,partition`` in turn)::

    .venv/bin/python -m confman.verify.command --duration 60 --seed $i \\
        --nemesis kill,pause,partition --out verify-reports/soak-$i

Add ``--nodes 5`` for five-node clusters. Deliberately broken nodes are test-only:
``python -m tests.faults.verify --bugs node:stale_linearizable ...`` runs the same command
against nodes with that bug patched in (``tests/faults``), and the ``linearizable`` check must
then fail; the shipped command refuses ``--bugs``. ``node:ack_before_fsync`` cannot be caught here:
kill -9 keeps the page cache, so an unsynced WAL write survives; only power loss (or a
fault-injecting file layer) would lose it.

This module runs it (`run_verify`); the checks are in ``confman.verify.checks``, settling and
collecting in ``confman.verify.collect``, the configuration and result types in
``confman.verify.outcome``, the report in ``confman.verify.report``; their public names stay
importable from here.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from confman.verify.checker import NOT_LINEARIZABLE
from confman.verify.checks import (
    AUDIT_PAGE,
    MUTATIONS,
    Replay,
    check_acknowledged,
    check_http,
    check_identical,
    check_linearizable,
    check_local_reads,
    checked_history,
    replay_audit,
)
from confman.verify.cluster import ProcessCluster
from confman.verify.collect import cleanup, collect_state, settle
from confman.verify.history import HistoryRecorder
from confman.verify.nemesis import Nemesis, parse_kinds, schedule
from confman.verify.outcome import RunConfig, RunResult, Verdict
from confman.verify.report import summary_text, write_report
from confman.verify.workload import Workload, WorkloadConfig, run_in_thread


# ---------------------------------------------------------------------------------- run
def default_report_dir(seed: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return Path("verify-reports") / f"{stamp}-seed{seed}"


class TestOnlyBugs(ValueError):
    """``--bugs`` given to the shipped command, whose nodes have no deliberate bugs."""


def run_verify(cfg: RunConfig) -> RunResult:
    """Run, check and write the report; the result (see `RunResult.exit_code`)."""
    if cfg.bugs and not getattr(ProcessCluster, "runs_deliberate_bugs", False):
        raise TestOnlyBugs(
            f"deliberate bugs ({cfg.bugs}) are test-only: shipped nodes have none; run "
            "`python -m tests.faults.verify --bugs ...` from a checkout instead"
        )
    out = cfg.out or default_report_dir(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    kinds = parse_kinds(cfg.nemesis)
    if cfg.targets and kinds:
        cfg.log("verify: --target given: no nemesis against an existing cluster")
        kinds = {}
    cluster: ProcessCluster | None = None
    base = Path(tempfile.mkdtemp(prefix="confman-verify-"))
    try:
        if cfg.targets:
            urls = [u.rstrip("/") + "/" for u in cfg.targets]
            api_key = cfg.api_key
        else:
            env = {"CONFMAN_TEST_BUGS": cfg.bugs} if cfg.bugs else None
            cluster = ProcessCluster(
                cfg.nodes, base, snapshot_interval=cfg.snapshot_interval, env=env
            )
            cfg.log(f"verify: starting {cfg.nodes} nodes" + (f" (bugs: {cfg.bugs})" if env else ""))
            cluster.start_all()
            cluster.wait_leader(timeout=30)
            cluster.wait_ready(timeout=30)
            urls = [cluster.url(n) for n in cluster.ids]
            api_key = cluster.keys["admin"]
        result = _run(cfg, kinds, cluster, urls, api_key)
        result.report_dir = out
        result.summary = summary_text(result)
        write_report(result, out, cluster)
        return result
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(base, ignore_errors=True)


def _run(
    cfg: RunConfig,
    kinds: dict[str, tuple[str, ...]],
    cluster: ProcessCluster | None,
    urls: list[str],
    api_key: str,
) -> RunResult:
    prefix = f"vf{cfg.seed}x{int(time.time() * 1000) % 10**6}" if cfg.targets else "vf"
    wcfg = WorkloadConfig(
        clients=cfg.clients,
        keys=cfg.keys,
        seed=cfg.seed,
        timeout=cfg.timeout,
        rate=cfg.rate,
        prefix=prefix,
        **cfg.workload,
    )
    workload = Workload(urls, api_key, wcfg, HistoryRecorder())
    faults = schedule(cfg.seed, kinds, cfg.duration, len(urls), cfg.timing) if cluster else []
    nemesis = Nemesis(cluster, faults, log=cfg.log) if cluster is not None else None
    started = threading.Event()
    stop = threading.Event()
    thread, errors = run_in_thread(workload.run, cfg.duration, 30.0, started)
    verdicts: list[Verdict] = []
    try:
        while not started.wait(0.2):
            if not thread.is_alive():
                raise RuntimeError(f"workload setup failed: {errors[0] if errors else '?'}")
        t0 = time.monotonic()
        cfg.log(f"verify: workload running for {cfg.duration:g} s, {len(faults)} faults planned")
        if nemesis is not None:
            nemesis.run(t0, stop)
        thread.join(max(0.0, t0 + cfg.duration - time.monotonic()) + cfg.timeout + 10)
    finally:
        workload.stop()
        stop.set()
        thread.join(cfg.timeout + 10)
    if errors:
        raise RuntimeError(f"workload failed: {errors[0]!r}") from errors[0]
    ended = time.monotonic()
    history_so_far = workload.recorder.history()
    started_at = min((op.call for op in history_so_far), default=t0)
    if nemesis is not None:
        healed = nemesis.heal_all()
        cfg.log("verify: final heal" + (f" ({', '.join(healed)})" if healed else ""))
    http = httpx.Client()
    try:
        index, seen = settle(http, urls, cfg.settle_timeout)
        if index is None:
            verdicts.append(
                Verdict("settle", False, f"not settled within {cfg.settle_timeout:g} s", seen)
            )
            index = 0
        else:
            verdicts.append(Verdict("settle", True, f"all nodes applied index {index}"))
        failures = asyncio.run(workload.final_reads())
        verdicts.append(
            Verdict(
                "available",
                not failures,
                f"{len(failures)} final linearizable reads failed"
                if failures
                else f"final reads of {len(workload.namespaces())} keys on {len(urls)} nodes",
                "\n".join(failures[:20]),
            )
        )
        states = {u: collect_state(http, u, api_key, index, prefix) for u in urls}
        if cfg.targets:
            cleanup(http, urls, api_key, workload.namespaces())
    finally:
        http.close()
    history = workload.recorder.history()
    lin, lin_result = check_linearizable(history, cfg.check_timeout)
    namespaces = workload.namespaces()
    verdicts.insert(0, lin)
    verdicts.insert(1, check_acknowledged(history, states, namespaces, workload.written))
    verdicts.insert(2, check_identical(states))
    verdicts.insert(3, check_http(workload.stats))
    verdicts.insert(4, check_local_reads(history, states, namespaces))
    crashes = nemesis.crashes if nemesis is not None else []
    verdicts.append(
        Verdict(
            "crashes",
            not crashes,
            f"{len(crashes)} nodes exited by themselves" if crashes else "no node crashed",
            "\n\n".join(f"{e.description}\n{e.error}" for e in crashes),
        )
    )
    acked = Counter(op.kind for op in history if op.kind in MUTATIONS and op.status == "ok")
    writes_ok = acked["write"] + acked["cas"]
    verdicts.append(
        Verdict(
            "progress",
            True if writes_ok else None,
            f"{writes_ok} writes/CAS acknowledged" if writes_ok else "no write acknowledged",
        )
    )
    events = (nemesis.events + nemesis.crashes) if nemesis is not None else []
    return RunResult(
        config=cfg,
        history=history,
        meta=workload.meta,
        stats=workload.stats,
        faults=faults,
        events=events,
        verdicts=verdicts,
        states=states,
        started=started_at,
        ended=ended,
        urls=urls,
        bad_keys=[p.key for p in lin_result.partitions if p.verdict == NOT_LINEARIZABLE],
    )


__all__ = [
    "AUDIT_PAGE",
    "MUTATIONS",
    "Replay",
    "RunConfig",
    "RunResult",
    "Verdict",
    "check_acknowledged",
    "check_http",
    "check_identical",
    "check_linearizable",
    "check_local_reads",
    "checked_history",
    "cleanup",
    "collect_state",
    "default_report_dir",
    "replay_audit",
    "run_verify",
    "settle",
]
