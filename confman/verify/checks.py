"""The end-of-run checks of a verify run, each a `Verdict` (see ``confman.verify.run``).

``linearizable`` (the history against `VersionedMapModel`), ``acknowledged`` (every
acknowledged change on every node's audit trail, as acknowledged and in real-time order),
``identical`` (every node's state the same), ``http`` (no undocumented 5xx) and
``local-reads`` (local reads saw only audited states). `replay_audit` turns an audit trail
back into the states of its entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confman.verify.checker import LINEARIZABLE, NOT_LINEARIZABLE, CheckResult, check
from confman.verify.history import History, Operation
from confman.verify.models import VersionedMapModel
from confman.verify.outcome import Verdict
from confman.verify.workload import CHECKED_LEVELS, ENTRY_KEY, Workload, WorkloadStats

__all__ = [
    "AUDIT_PAGE",
    "MUTATIONS",
    "Replay",
    "check_acknowledged",
    "check_http",
    "check_identical",
    "check_linearizable",
    "check_local_reads",
    "checked_history",
    "replay_audit",
]

AUDIT_PAGE = 1000
MUTATIONS = ("write", "cas", "delete")


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
