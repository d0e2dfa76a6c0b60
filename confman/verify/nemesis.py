"""The nemesis: a seeded schedule of faults, and its execution against a `ProcessCluster`.

`schedule(seed, kinds, duration, nodes)` is a pure function: the same arguments give the
same faults, times and node choices. Choices that depend on the cluster at the time (which
node leads) are written as ``leader`` and resolved when the fault starts; when no leader is
known the seeded choice is used instead.

Kinds (``--nemesis``; comma-separated, ``all`` for every kind, ``none`` for no faults):

- ``kill``: SIGKILL a node (the leader or a seeded one), restart it when the fault ends;
- ``pause``: SIGSTOP a node (the leader or a seeded one), SIGCONT when the fault ends;
- ``partition``: one of the variants below, healed when the fault ends; name one variant as
  ``partition:<variant>`` (several: ``partition:isolate-leader+cut``):
  ``isolate-leader`` (the leader alone), ``isolate`` (a seeded node alone), ``split``
  (a seeded minority against the majority), ``bridge`` (two halves joined by one node that
  sees both), ``cut`` (one direction only: a node cannot send to, or cannot hear, the rest).

With more than one kind some faults combine two kinds at once (e.g. a partition while a node
is paused). Every fault is followed by its healing and a quiet gap; the run ends with
`Nemesis.heal_all` (every link healed, every node resumed and running).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confman.verify.cluster import ClusterError, ProcessCluster

KINDS = ("kill", "pause", "partition")
PARTITION_VARIANTS = ("isolate-leader", "isolate", "split", "bridge", "cut")


def parse_kinds(spec: str | Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``"kill,partition:cut"`` -> ``{"kill": ("leader", "node"), "partition": ("cut",)}``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: dict[str, tuple[str, ...]] = {}
    for raw in (s.strip() for s in items):
        if not raw or raw == "none":
            continue
        if raw == "all":
            for k in KINDS:
                out[k] = _variants(k, None)
            continue
        kind, _, variants = raw.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown nemesis {kind!r} (kinds: {', '.join(KINDS)}, all, none)")
        chosen = _variants(kind, variants.split("+") if variants else None)
        out[kind] = tuple(dict.fromkeys(out.get(kind, ()) + chosen))
    return out


def _variants(kind: str, names: list[str] | None) -> tuple[str, ...]:
    allowed = PARTITION_VARIANTS if kind == "partition" else ("leader", "node")
    if names is None:
        return allowed
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"unknown {kind} variant(s) {bad} (variants: {', '.join(allowed)})")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Action:
    """One fault of one kind. ``order`` is a seeded permutation of node indices that resolves
    every node choice (``order[0]`` is "the" node); ``leader`` variants put the leader first."""

    kind: str
    variant: str
    order: tuple[int, ...]
    size: int = 1
    """Nodes on the small side (``split``); cut: 1 = outbound, 0 = inbound."""

    def label(self) -> str:
        return f"{self.kind}:{self.variant}"


@dataclass(frozen=True, slots=True)
class Fault:
    """Actions that start together at ``start`` and are undone at ``end`` (seconds from the
    start of the run)."""

    start: float
    end: float
    actions: tuple[Action, ...]

    def label(self) -> str:
        return "+".join(a.label() for a in self.actions)


@dataclass(frozen=True, slots=True)
class Timing:
    """Shape of a schedule, in seconds."""

    warmup: float = 2.0
    tail: float = 3.0
    """Quiet time between the last fault's end and the end of the run."""
    fault: tuple[float, float] = (2.0, 5.0)
    gap: tuple[float, float] = (1.0, 3.0)
    combine: float = 0.25
    """Chance that a fault combines two kinds (when more than one is enabled)."""


def schedule(
    seed: int,
    kinds: dict[str, tuple[str, ...]] | str,
    duration: float,
    nodes: int,
    timing: Timing = Timing(),
) -> list[Fault]:
    """The faults of a run: deterministic in its arguments."""
    if isinstance(kinds, str):
        kinds = parse_kinds(kinds)
    rng = random.Random(f"confman-nemesis:{seed}")
    enabled = [k for k in KINDS if kinds.get(k)]
    faults: list[Fault] = []
    if not enabled or nodes < 2:
        return faults
    t = timing.warmup
    while True:
        length = rng.uniform(*timing.fault)
        if t + length > duration - timing.tail:
            break
        picked = [rng.choice(enabled)]
        if len(enabled) > 1 and rng.random() < timing.combine:
            picked.append(rng.choice([k for k in enabled if k != picked[0]]))
        actions = []
        for kind in sorted(picked, key=KINDS.index):
            order = list(range(nodes))
            rng.shuffle(order)
            variant = rng.choice(kinds[kind])
            size = 1
            if variant == "split":
                size = rng.randint(1, max(1, (nodes - 1) // 2))
            elif variant == "cut":
                size = rng.randint(0, 1)
            actions.append(Action(kind, variant, tuple(order), size))
        faults.append(Fault(round(t, 3), round(t + length, 3), tuple(actions)))
        t += length + rng.uniform(*timing.gap)
    return faults


@dataclass(slots=True)
class FaultEvent:
    """A fault as it happened (monotonic times), for the report and the timeline."""

    name: str
    description: str
    start: float
    end: float | None = None
    nodes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "start": self.start,
            "end": self.end,
            "nodes": self.nodes,
            "error": self.error,
        }


class Nemesis:
    """Runs a schedule against ``cluster`` from the calling thread (the main thread, so that
    restarted nodes die with the harness)."""

    def __init__(
        self,
        cluster: ProcessCluster,
        faults: Sequence[Fault],
        *,
        log: Callable[[str], None] | None = None,
        check_interval: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.faults = list(faults)
        self.events: list[FaultEvent] = []
        self.crashes: list[FaultEvent] = []
        """Nodes that exited without being told to: always a finding."""
        self._log = log or (lambda _msg: None)
        self._check_interval = check_interval

    # -------------------------------------------------------------- running
    def run(self, t0: float, stop: threading.Event) -> None:
        """Run every fault at ``t0 + fault.start`` until done or ``stop`` is set; undoes the
        fault in progress when stopped."""
        for fault in self.faults:
            if not self._wait_until(t0 + fault.start, stop):
                return
            ev, undo = self._apply(fault)
            self.events.append(ev)
            self._log(f"nemesis: {ev.description}" + (f" ({ev.error})" if ev.error else ""))
            try:
                self._wait_until(t0 + fault.end, stop)
            finally:
                for fn in reversed(undo):
                    try:
                        fn()
                    except ClusterError as exc:
                        ev.error = f"{ev.error or ''} undo failed: {exc}".strip()
                ev.end = time.monotonic()
                self._log(f"nemesis: healed {ev.name}")

    def _wait_until(self, when: float, stop: threading.Event) -> bool:
        """Wait (watching for crashed nodes) until ``when``; False if stopped first."""
        while True:
            self.check_crashes()
            left = when - time.monotonic()
            if left <= 0:
                return True
            if stop.wait(min(left, self._check_interval)):
                return False

    def check_crashes(self) -> None:
        """Note (and restart) nodes that exited by themselves."""
        for node in self.cluster.nodes.values():
            p = node.proc
            if p is None or node.expect_down or p.poll() is None:
                continue
            now = time.monotonic()
            ev = FaultEvent(
                "crash",
                f"{node.id} exited by itself with code {p.returncode}",
                now,
                now,
                [node.id],
                self.cluster.log_tail(node.id, 30),
            )
            self.crashes.append(ev)
            self._log(f"nemesis: CRASH {ev.description}")
            self.cluster.forget_exit(node.id)
            self.cluster.start(node.id)

    def heal_all(self) -> list[str]:
        """Heal every link, resume paused nodes, start stopped ones; what was done."""
        c = self.cluster
        done = []
        self.check_crashes()
        c.heal()
        for nid, node in c.nodes.items():
            if node.paused:
                c.resume(nid)
                done.append(f"resumed {nid}")
            if not node.running:
                c.start(nid)
                done.append(f"started {nid}")
        return done

    # -------------------------------------------------------------- faults
    def _nodes(self, action: Action) -> list[str]:
        """The action's node order, with the current leader first for ``leader`` variants."""
        ids = [self.cluster.ids[i] for i in action.order]
        if action.variant in ("leader", "isolate-leader"):
            leader = self.cluster.leader()
            if leader is not None:
                ids.remove(leader)
                ids.insert(0, leader)
        return ids

    def _apply(self, fault: Fault) -> tuple[FaultEvent, list[Callable[[], None]]]:
        now = time.monotonic()
        ev = FaultEvent(fault.label(), "", now)
        undo: list[Callable[[], None]] = []
        descriptions = []
        touched: set[str] = set()
        for action in fault.actions:
            ids = self._nodes(action)
            if action.kind in ("kill", "pause"):
                # in a combination, hit a node the other action has not touched
                target = next((n for n in ids if n not in touched), ids[0])
                ids = [target] + [n for n in ids if n != target]
            try:
                desc, nodes = self._do(action, ids, undo)
            except ClusterError as exc:
                desc, nodes = f"{action.label()} skipped", []
                ev.error = str(exc).splitlines()[0]
            descriptions.append(desc)
            touched.update(nodes)
            ev.nodes.extend(n for n in nodes if n not in ev.nodes)
        ev.description = "; ".join(descriptions)
        return ev, undo

    def _do(
        self, action: Action, ids: list[str], undo: list[Callable[[], None]]
    ) -> tuple[str, list[str]]:
        c = self.cluster
        first = ids[0]
        who = "leader " if action.variant in ("leader", "isolate-leader") else ""
        if action.kind == "kill":
            c.kill(first)
            undo.append(lambda: c.start(first))
            return f"kill -9 {who}{first}", [first]
        if action.kind == "pause":
            c.pause(first)
            undo.append(lambda: c.resume(first))
            return f"SIGSTOP {who}{first}", [first]
        undo.append(c.heal)
        v = action.variant
        if v in ("isolate-leader", "isolate"):
            c.isolate(first)
            return f"isolate {who}{first}", [first]
        if v == "split":
            small = ids[: action.size]
            c.partition(small)
            rest = [n for n in c.ids if n not in small]
            return f"split {','.join(small)} | {','.join(rest)}", ids
        if v == "bridge":
            rest = ids[1:]
            half = max(1, len(rest) // 2)
            a, b = rest[:half], rest[half:]
            c.bridge(a, first, b)
            return f"bridge {','.join(a)} | {first} | {','.join(b)}", ids
        # cut: one direction between the node and every other node
        others = [n for n in c.ids if n != first]
        for o in others:
            if action.size:
                c.cut(first, o)
            else:
                c.cut(o, first)
        arrow = f"{first} -/-> others" if action.size else f"others -/-> {first}"
        return f"one-way cut {arrow}", [first]


__all__ = [
    "KINDS",
    "PARTITION_VARIANTS",
    "Action",
    "Fault",
    "FaultEvent",
    "Nemesis",
    "Timing",
    "parse_kinds",
    "schedule",
]
