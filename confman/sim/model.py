"""The simulator's records: one simulated member, and what a run did."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from confman.raft.config import Config
from confman.raft.node import RawNode
from confman.raft.ready import Step, plan_ready
from confman.raft.storage import MemoryStorage
from confman.raft.types import ConfState, Entry, HardState, Message, NodeId, Ready, Snapshot
from confman.sim.checks import Violation

#: The simulated state machine's snapshot data: (applied index, state digest).
SM_SNAPSHOT = struct.Struct("<qq")

#: What the state machine is handed: a snapshot, or entries with the membership after each
#: membership change among them.
Handout: TypeAlias = Snapshot | tuple[list[Entry], dict[int, ConfState]]


class CoreFactory(Protocol):
    """Builds a member's core (``RawNode`` itself, or a test's broken subclass)."""

    def __call__(self, config: Config, storage: MemoryStorage, /) -> RawNode: ...


class Planner(Protocol):
    """Turns a Ready into steps (``confman.raft.ready.plan_ready``, or a broken variant)."""

    def __call__(
        self, rd: Ready, *, leader: bool, durable: tuple[int, NodeId | None], latest: HardState
    ) -> tuple[Step, ...]: ...


@dataclass(frozen=True, slots=True)
class Variant:
    """What a run exercises: a core and a Ready planner; ``bugs`` names a broken one."""

    core: CoreFactory = RawNode
    plan: Planner = plan_ready
    bugs: tuple[str, ...] = ()


#: The shipped core and plan.
CORRECT = Variant()


@dataclass(slots=True)
class SimNode:
    """One member: its disk (``storage``) survives crashes, everything else is volatile."""

    id: NodeId
    storage: MemoryStorage
    raw: RawNode | None = None
    applied: int = 0
    digest: int = 0
    conf: ConfState = field(default_factory=ConfState)
    restart_at: int = -1  # tick of a scheduled restart, -1 when none
    retire_at: int = -1  # tick it shuts down after being removed, -1 when none
    crash_at: int = -1  # tick of a scheduled crash, -1 when none
    led: int = -1  # last term this node was seen leading
    rate: float = 1.0  # ticks of this node's clock per virtual tick (clock drift)
    booted: bool = False
    phase: float = 0.0
    paused_since: int = -1  # the process is frozen (no ticks, no deliveries) since then
    paused_until: int = -1
    inbox: list[Message] = field(default_factory=list)  # delivered while frozen
    queued_lease: int = -1  # read floor of a lease read a client sent while it was frozen
    queued_lease_at: int = -1  # when that client sends it
    commit: int = -1  # commit index last reported to the checker
    retired: bool = False
    #: A leader's Ready whose disk write is due: (Ready, steps from the write on, due tick).
    pending: tuple[Ready, tuple[Step, ...], int] | None = None
    hard: HardState = field(default_factory=HardState)  # newest hard state (maybe unwritten)
    reads: dict[bytes, int] = field(default_factory=dict)  # ReadIndex ctx -> floor
    handed: int = 0  # last index handed to the state machine (its queue included)
    #: Batches handed out but not yet applied (asynchronous apply): (due tick, item).
    apply_q: deque[tuple[int, Handout]] = field(default_factory=deque)

    @property
    def up(self) -> bool:
        return self.raw is not None

    @property
    def reachable(self) -> bool:
        """Running and not frozen: a client can talk to it."""
        return self.raw is not None and self.paused_since < 0


@dataclass(slots=True)
class RunStats:
    """What one run did (summed by the runner)."""

    ticks: int = 0
    messages: int = 0
    delivered: int = 0
    elections: int = 0
    committed: int = 0
    crashes: int = 0
    partitions: int = 0
    snapshots_sent: int = 0
    reads_checked: int = 0
    lease_reads: int = 0
    conf_changes: int = 0
    transfers: int = 0
    leader_after_calm: int = -1  # ticks from calm start to a leader


@dataclass(slots=True)
class RunResult:
    """Outcome of a run: a violation (or None), the event log and counters."""

    seed: int
    profile: str
    bugs: tuple[str, ...]
    violation: Violation | None
    events: list[tuple[int, str]]
    stats: RunStats

    @property
    def ok(self) -> bool:
        return self.violation is None

    def trace(self, last: int | None = None) -> str:
        """The event log up to the violation (the last ``last`` events if given)."""
        evs = self.events if last is None else self.events[-last:]
        lines = [f"seed={self.seed} profile={self.profile} bugs={','.join(self.bugs) or '-'}"]
        if last is not None and len(self.events) > last:
            lines.append(f"  ... {len(self.events) - last} earlier events")
        lines += [f"  t={t:5d} {text}" for t, text in evs]
        if self.violation is not None:
            lines.append(f"VIOLATION {self.violation}")
        return "\n".join(lines)


def describe(m: Message) -> str:
    """One line for a trace: a message and its main fields."""
    extra = ""
    if m.entries:
        extra = f" ents {m.entries[0].index}..{m.entries[-1].index}"
    if m.reject:
        extra += " reject"
    return (
        f"send {m.type.name} {m.frm}->{m.to} term {m.term} idx {m.index} "
        f"logterm {m.log_term} commit {m.commit}{extra}"
    )
