"""What a runtime must do with a ``Ready``, step by step: the one copy of the durability rules.

``plan_ready`` turns a ``Ready`` into an ordered tuple of steps; the node runtime
(``confman.node.runtime``) and the simulator (``confman.sim.cluster``) both execute that
tuple in order, so the simulator's sweeps exercise the rules that run in production. The
module is pure: no I/O, no clock, no state of its own.

The order:

1. ``KeepHardState``: remember the newest hard state (in memory only). The caller notes
   ``rd.soft_state`` before planning: the plan depends on whether the node leads.
2. ``Send(durable=False)``: a leader may send appends, heartbeats and snapshots before its
   own write (thesis §10.2.1: it counts itself towards a commit only once ``advance``
   reports its entries durable) -- but only when this Ready changes neither term nor vote.
   A message carries the sender's term; if the term (or a vote in it) could be forgotten in
   a crash, a restarted node could lead the same term again with a different log.
3. ``SaveSnapshot`` then ``HandOutSnapshot``: a received snapshot is made durable before the
   state machine is given it.
4. ``WriteLog``: the entries and the hard state in one write.
5. ``Send(durable=True)``: every other message (votes, append responses, ...) leaves only
   after that write: it promises what the write made durable.
6. ``HandOutEntries``, ``ServeReads``, ``Advance``.

When is the hard state written? A Ready may carry a hard state whose only change is the
commit index. Raft requires term and vote to be durable before any message that depends on
them (a vote granted twice in one term breaks election safety); it requires nothing of the
commit index, which a restarted node learns again from the leader and, here, recovers as at
least its applied index and its snapshot. So:

- term or vote differs from the durable ones: written, synced, before any message;
- entries to append: the newest hard state rides along in the same (synced) write;
- commit alone: not written -- unless the entries handed out include a membership change.
  A node that restarted believing an older configuration could otherwise block every
  election after a full restart; that write is synced too, since it exists for crashes.

The simulator used to flip a coin between this rule and writing every commit-only hard
state; the latter is safe but only costs writes, so the simulator now runs the rule above.
It also looks at the entries handed out rather than at whether the Ready carried a hard
state: when the commit jumps past a membership change in one Ready but the change is handed
out in a later one (``max_committed_size_per_ready``), the old rules never wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

from confman.raft.types import (
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Ready,
    Snapshot,
)

#: Messages a leader may send before its own write is durable (thesis §10.2.1).
EARLY_TYPES = frozenset({MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT})


@dataclass(frozen=True, slots=True)
class KeepHardState:
    """Remember the newest hard state in memory (written later, or with entries, or never)."""

    hard_state: HardState


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``messages``; ``durable``: everything earlier in the plan is on disk by now."""

    messages: list[Message]
    durable: bool


@dataclass(frozen=True, slots=True)
class SaveSnapshot:
    """Make a snapshot from the leader durable and make it the log's base."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class HandOutSnapshot:
    """Give the (durable) snapshot to the state machine, ahead of any entry after it."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class WriteLog:
    """Append ``entries`` and write ``hard_state`` in one write, synced when ``sync``."""

    entries: list[Entry]
    hard_state: HardState
    sync: bool


@dataclass(frozen=True, slots=True)
class HandOutEntries:
    """Give committed (and durable) entries to the state machine, in log order."""

    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class ServeReads:
    """Release ReadIndex requests (each waits for its index to be applied)."""

    read_states: list[ReadState]


@dataclass(frozen=True, slots=True)
class Advance:
    """Tell the core the Ready was handled (``RawNode.advance``)."""


Step = (
    KeepHardState
    | Send
    | SaveSnapshot
    | HandOutSnapshot
    | WriteLog
    | HandOutEntries
    | ServeReads
    | Advance
)


def must_write(rd: Ready, durable: tuple[int, NodeId | None], hs: HardState) -> bool:
    """Whether this Ready needs a log write (see the module docstring)."""
    return bool(
        rd.entries
        or (hs.term, hs.vote) != durable
        or any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)
    )


def plan_ready(
    rd: Ready, *, leader: bool, durable: tuple[int, NodeId | None], latest: HardState
) -> tuple[Step, ...]:
    """The steps that handle ``rd``, in order.

    ``leader``: the node leads now; ``durable``: the (term, vote) last written; ``latest``:
    the newest hard state before this Ready (``rd.hard_state`` replaces it).
    """
    steps: list[Step] = []
    hs = latest
    if rd.hard_state is not None:
        hs = rd.hard_state
        steps.append(KeepHardState(hs))
    stable = (hs.term, hs.vote) == durable
    late = rd.messages
    if leader and stable:
        early = [m for m in rd.messages if m.type in EARLY_TYPES]
        if early:
            steps.append(Send(early, durable=False))
            late = [m for m in rd.messages if m.type not in EARLY_TYPES]
    if rd.snapshot is not None:
        steps.append(SaveSnapshot(rd.snapshot))
        steps.append(HandOutSnapshot(rd.snapshot))
    if must_write(rd, durable, hs):
        steps.append(WriteLog(rd.entries, hs, sync=True))
    if late:
        steps.append(Send(late, durable=True))
    if rd.committed_entries:
        steps.append(HandOutEntries(rd.committed_entries))
    if rd.read_states:
        steps.append(ServeReads(rd.read_states))
    steps.append(Advance())
    return tuple(steps)
