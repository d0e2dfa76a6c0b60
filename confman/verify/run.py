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

Add ``--nodes 5`` for five-node clusters. The deliberately broken node is run with
``CONFMAN_TEST_BUGS=node:stale_linearizable`` in the environment (or ``--bugs``): the
``linearizable`` check must then fail. ``node:ack_before_fsync`` cannot be caught here:
kill -9 keeps the page cache, so an unsynced WAL write survives; only power loss (or a
fault-injecting file layer) would lose it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from confman.verify.checker import LINEARIZABLE, NOT_LINEARIZABLE, CheckResult, check
from confman.verify.cluster import ProcessCluster
from confman.verify.history import History, HistoryRecorder, Operation
from confman.verify.models import VersionedMapModel
from confman.verify.nemesis import Fault, FaultEvent, Nemesis, Timing, parse_kinds, schedule
from confman.verify.workload import (
    CHECKED_LEVELS,
    ENTRY_KEY,
    Workload,
    WorkloadConfig,
    WorkloadStats,
    run_in_thread,
)

AUDIT_PAGE = 1000
MUTATIONS = ("write", "cas", "delete")


@dataclass(slots=True)
class RunConfig:
    """Everything a run needs; `command.verify` fills it from the command line."""

    duration: float = 60.0
    nemesis: str = "kill,pause,partition"
    seed: int = 0
    nodes: int = 3
    clients: int = 10
    keys: int = 8
    targets: list[str] | None = None
    api_key: str = "confman_dev_abc123"
    """Only with ``targets``: a fresh cluster makes its own keys."""
    out: Path | None = None
    """Report directory (default ``verify-reports/<time>-seed<N>``)."""
    bugs: str = ""
    """``CONFMAN_TEST_BUGS`` for the nodes of a fresh cluster."""
    timeout: float = 2.0
    rate: float = 0.0
    settle_timeout: float = 40.0
    check_timeout: float = 120.0
    snapshot_interval: int = 2000
    timing: Timing = field(default_factory=Timing)
    workload: dict[str, Any] = field(default_factory=dict)
    """Extra `WorkloadConfig` fields (mix weights, ``rotate_after``, ...)."""
    log: Callable[[str], None] = print


@dataclass(slots=True)
class Verdict:
    """The outcome of one check: ``ok`` True (passed), False (violated), None (unknown)."""

    name: str
    ok: bool | None
    summary: str
    details: str = ""

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "UNKNOWN"}[self.ok]


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    history: History
    meta: dict[int, dict[str, Any]]
    stats: WorkloadStats
    faults: list[Fault]
    events: list[FaultEvent]
    verdicts: list[Verdict]
    states: dict[str, dict[str, Any]]
    started: float
    ended: float
    """Monotonic times of the workload's start and end (before the final heal)."""
    urls: list[str]
    bad_keys: list[Any] = field(default_factory=list)
    """Keys the linearizability checker found violated (for the timeline)."""
    report_dir: Path | None = None
    summary: str = ""

    @property
    def violations(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.ok is False]

    @property
    def valid(self) -> bool:
        return not self.violations and all(v.ok for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        if self.violations:
            return 1
        return 0 if self.valid else 2


# ---------------------------------------------------------------------------------- checks
def checked_history(history: Sequence[Operation]) -> History:
    """The operations the linearizability check takes: mutations and non-local reads."""
    return [
        op
        for op in history
        if op.kind in MUTATIONS or (op.kind == "read" and op.input[1] in CHECKED_LEVELS)
    ]


def check_linearizable(history: Sequence[Operation], timeout: float) -> tuple[Verdict, CheckResult]:
    ops = checked_history(history)
    result = check(ops, VersionedMapModel(), timeout=timeout)
    n_keys = len(result.partitions)
    took = f"{result.elapsed:.1f} s"
    if result.verdict == LINEARIZABLE:
        return Verdict("linearizable", True, f"{len(ops)} ops on {n_keys} keys ({took})"), result
    if result.verdict == NOT_LINEARIZABLE:
        bad = [p.key for p in result.partitions if p.verdict == NOT_LINEARIZABLE]
        summary = f"NOT linearizable on {', '.join(map(str, bad))} ({len(ops)} ops, {took})"
        return Verdict("linearizable", False, summary, result.details), result
    return Verdict("linearizable", None, f"undecided after {took}", result.details), result


@dataclass(slots=True)
class Replay:
    """A namespace's audit trail replayed: the entry's states, oldest first."""

    states: list[tuple[str, int] | None] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    """value -> index in `states` where it was written (first time)."""
    duplicates: list[str] = field(default_factory=list)
    deletes: int = 0
    truncated: bool = False

    @property
    def final(self) -> tuple[str, int] | None:
        return self.states[-1] if self.states else None


def replay_audit(events: Sequence[dict[str, Any]]) -> Replay:
    """Replay a namespace's audit (newest first, as the API returns it) for key ``k``."""
    r = Replay(truncated=len(events) >= AUDIT_PAGE)
    current: tuple[str, int] | None = None
    for ev in reversed(events):
        if ev.get("key") != ENTRY_KEY or not str(ev.get("action", "")).startswith("config."):
            continue
        action = ev["action"]
        if action == "config.deleted":
            current = None
            r.deletes += 1
        else:
            value = ev.get("newValue")
            version = 1 if action == "config.created" or current is None else current[1] + 1
            current = (str(value), version)
            if current[0] in r.position:
                r.duplicates.append(current[0])
            else:
                r.position[current[0]] = len(r.states)
        r.states.append(current)
    return r


def _final_entry(state: dict[str, Any], ns: str) -> tuple[str, int] | None:
    for e in state.get("configs", []):
        if e.get("namespace") == ns and e.get("key") == ENTRY_KEY:
            return (e["value"], e["version"])
    return None


def check_acknowledged(
    history: Sequence[Operation],
    states: dict[str, dict[str, Any]],
    namespaces: Sequence[str],
    written: set[str],
) -> Verdict:
    """Every acknowledged change is in every node's audit trail, as acknowledged."""
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        if op.kind in MUTATIONS and op.status == "ok":
            by_key.setdefault(op.input[0], []).append(op)
    problems: list[str] = []
    notes: list[str] = []
    checked = 0
    for url, st in states.items():
        if st.get("error"):
            problems.append(f"{url}: state not collected: {st['error']}")
            continue
        for ns in namespaces:
            key = Workload.key_of(ns)
            rp = replay_audit(st["audits"].get(ns, []))
            where = f"{url} {key}"
            if rp.truncated:
                notes.append(f"{where}: audit has {AUDIT_PAGE}+ events; older ones not checked")
            for v in rp.duplicates:
                problems.append(f"{where}: value {v!r} applied twice")
            for v in rp.position:
                if v not in written:
                    problems.append(f"{where}: audit shows value {v!r} that nobody wrote")
            final = _final_entry(st, ns)
            if final != rp.final:
                problems.append(f"{where}: final entry {final} but the audit ends at {rp.final}")
            acked_deletes = 0
            placed: list[tuple[Operation, int]] = []
            for op in by_key.get(key, []):
                if op.kind == "delete":
                    acked_deletes += op.output is True
                    continue
                if op.output is False:
                    continue
                value = op.input[-1]
                checked += 1
                pos = rp.position.get(value)
                if pos is None:
                    if not rp.truncated:
                        problems.append(
                            f"{where}: acknowledged {op.kind} of {value!r} (version "
                            f"{op.output}, client {op.client_id}, t={op.call:.3f}) is missing"
                        )
                    continue
                if rp.states[pos] != (value, op.output):
                    problems.append(
                        f"{where}: {value!r} acknowledged as version {op.output}, "
                        f"audited as {rp.states[pos]}"
                    )
                placed.append((op, pos))
            if acked_deletes > rp.deletes and not rp.truncated:
                problems.append(
                    f"{where}: {acked_deletes} deletes acknowledged, {rp.deletes} audited"
                )
            problems.extend(f"{where}: {p}" for p in _order_violations(placed))
    summary = f"{checked} acknowledged write checks over {len(states)} nodes"
    details = "\n".join(problems[:50] + notes[:10])
    if problems:
        return Verdict("acknowledged", False, f"{len(problems)} problems; {summary}", details)
    return Verdict("acknowledged", True, summary, details)


def _order_violations(placed: list[tuple[Operation, int]]) -> list[str]:
    """Acknowledged writes that precede others in real time must precede them in the audit."""
    out: list[str] = []
    by_ret = sorted(placed, key=lambda p: p[0].ret or 0.0)
    best: tuple[Operation, int] | None = None
    k = 0
    for op, pos in sorted(placed, key=lambda p: p[0].call):
        while k < len(by_ret) and (by_ret[k][0].ret or 0.0) < op.call:
            if best is None or by_ret[k][1] > best[1]:
                best = by_ret[k]
            k += 1
        if best is not None and best[1] > pos:
            out.append(
                f"{op.input[-1]!r} (audit #{pos}) was invoked after {best[0].input[-1]!r} "
                f"(audit #{best[1]}) was acknowledged, but audited before it"
            )
    return out[:10]


def check_identical(states: dict[str, dict[str, Any]]) -> Verdict:
    """Every node's namespaces, entries and audits are equal."""
    got = {u: s for u, s in states.items() if not s.get("error")}
    if len(got) < len(states):
        missing = sorted(set(states) - set(got))
        return Verdict("identical", False, f"no state from {', '.join(missing)}")
    if len(got) < 2:
        return Verdict("identical", True, "one node only")
    (ref_url, ref), *others = got.items()
    diffs: list[str] = []
    for url, st in others:
        for part in ("namespaces", "configs"):
            if st[part] != ref[part]:
                diffs.append(f"{part} of {url} differ from {ref_url}: {_diff(ref[part], st[part])}")
        for ns in sorted(set(ref["audits"]) | set(st["audits"])):
            a, b = ref["audits"].get(ns), st["audits"].get(ns)
            if a != b:
                diffs.append(f"audit of {ns} on {url} differs from {ref_url}: {_diff(a, b)}")
    n_entries = len(ref["configs"])
    summary = f"{len(got)} nodes, {len(ref['namespaces'])} namespaces, {n_entries} entries"
    if diffs:
        return Verdict("identical", False, f"{len(diffs)} differences; {summary}", "\n".join(diffs))
    return Verdict("identical", True, summary)


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return f"first difference at item {i}: {x!r} vs {y!r}"
        return f"lengths {len(a)} vs {len(b)}"
    return f"{a!r:.200} vs {b!r:.200}"


def check_http(stats: WorkloadStats) -> Verdict:
    n5 = sum(n for (s, _), n in stats.http.items() if s >= 500)
    by = ", ".join(f"{s} {t}: {n}" for (s, t), n in sorted(stats.http.items()) if s >= 500)
    if stats.unexpected_5xx:
        bad = ", ".join(f"{s} {t}: {n}" for (s, t), n in stats.unexpected_5xx.items())
        samples = [
            f"{a.method} {a.node}{a.path} -> {a.status} {a.title}: {a.detail}"
            for a in stats.anomalies
            if a.status >= 500
        ][:10]
        return Verdict("http", False, f"undocumented 5xx: {bad}", "\n".join(samples))
    return Verdict("http", True, f"{n5} documented 5xx ({by or 'none'})")


def check_local_reads(
    history: Sequence[Operation], states: dict[str, dict[str, Any]], namespaces: Sequence[str]
) -> Verdict:
    """Local reads may be stale, but must show a state the entry really had."""
    seen: dict[str, set[tuple[str, int] | None]] = {}
    truncated: set[str] = set()
    for st in states.values():
        for ns in namespaces:
            rp = replay_audit(st.get("audits", {}).get(ns, []))
            seen.setdefault(Workload.key_of(ns), {None}).update(rp.states)
            if rp.truncated:
                truncated.add(Workload.key_of(ns))
    bad = []
    n = 0
    for op in history:
        if op.kind == "read" and op.input[1] == "local" and op.status == "ok":
            n += 1
            key = op.input[0]
            if key not in truncated and op.output not in seen.get(key, {None}):
                bad.append(f"client {op.client_id} read {op.output} from {key} at {op.call:.3f}")
    if bad:
        return Verdict(
            "local-reads",
            False,
            f"{len(bad)} of {n} local reads saw states no audit shows",
            "\n".join(bad[:20]),
        )
    return Verdict("local-reads", True, f"{n} local reads saw audited states")


# ---------------------------------------------------------------------------------- settle
def _statuses(http: httpx.Client, urls: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for u in urls:
        try:
            r = http.get(u + "health/ready", timeout=1.0)
            out[u] = r.json()
        except (httpx.HTTPError, ValueError):
            out[u] = None
    return out


def settle(http: httpx.Client, urls: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Wait until every node is ready under one leader and has applied the highest commit
    index seen one poll earlier (so writes of other clients cannot keep it waiting);
    (that index, "") or (None, what was seen last)."""
    deadline = time.monotonic() + timeout
    target: int | None = None
    while True:
        sts = _statuses(http, urls)
        cl = {u: ((s or {}).get("cluster") or {}) for u, s in sts.items()}
        leaders = {c.get("leader") for c in cl.values()}
        ready = all(s is not None and s.get("status") == "ready" for s in sts.values())
        if ready and len(leaders) == 1:
            applied = min(int(c.get("appliedIndex") or 0) for c in cl.values())
            if target is not None and applied >= target:
                return target, ""
            target = max(int(c.get("commitIndex") or 0) for c in cl.values())
        else:
            target = None
        if time.monotonic() >= deadline:
            return None, "; ".join(
                f"{u} {(s or {}).get('status', 'no answer')} role={c.get('role')} "
                f"term={c.get('term')} leader={c.get('leader')} commit={c.get('commitIndex')} "
                f"applied={c.get('appliedIndex')}"
                for (u, s), c in zip(sts.items(), cl.values(), strict=True)
            )
        time.sleep(0.1)


def collect_state(
    http: httpx.Client, url: str, api_key: str, min_index: int, prefix: str
) -> dict[str, Any]:
    """A node's namespaces, entries and the audits of the run's namespaces (at min_index)."""
    h = {"X-Api-Key": api_key}
    q = f"minIndex={min_index}"
    try:

        def get(path: str) -> Any:
            r = http.get(f"{url}{path}{'&' if '?' in path else '?'}{q}", headers=h, timeout=10.0)
            r.raise_for_status()
            return r.json()

        mine = [n for n in get("api/v1/namespaces") if n["path"].startswith(prefix + "-")]
        configs = [e for e in get("api/v1/configs") if e["namespace"].startswith(prefix + "-")]
        audits = {
            n["path"]: get(f"api/v1/namespaces/{n['path']}/audit?limit={AUDIT_PAGE}") for n in mine
        }
        return {"namespaces": mine, "configs": configs, "audits": audits, "error": None}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return {"namespaces": [], "configs": [], "audits": {}, "error": f"{exc!r}"[:300]}


def cleanup(
    http: httpx.Client, urls: Sequence[str], api_key: str, namespaces: Sequence[str]
) -> None:
    """Delete the run's namespaces from an existing cluster (best effort, via any node)."""
    for ns in namespaces:
        for url in urls:
            try:
                r = http.delete(
                    f"{url}api/v1/namespaces/{ns}",
                    headers={"X-Api-Key": api_key},
                    follow_redirects=True,
                    timeout=5.0,
                )
            except httpx.HTTPError:
                continue
            if r.status_code in (204, 404):
                break


# ---------------------------------------------------------------------------------- run
def default_report_dir(seed: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return Path("verify-reports") / f"{stamp}-seed{seed}"


def run_verify(cfg: RunConfig) -> RunResult:
    """Run, check and write the report; the result (see `RunResult.exit_code`)."""
    from confman.verify.report import summary_text, write_report

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
    "RunConfig",
    "RunResult",
    "Verdict",
    "check_acknowledged",
    "check_http",
    "check_identical",
    "check_linearizable",
    "check_local_reads",
    "checked_history",
    "replay_audit",
    "run_verify",
    "settle",
]
