"""Value types shared by the Raft core, its storage and its runtime.

Everything here is plain data: the core consumes and produces these values and
never touches I/O. Node ids are strings (the member names of the configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NodeId = str


class EntryType(IntEnum):
    """Kind of a log entry."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to the core (empty for the leader's no-op)."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before any message of the same Ready is sent."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """Cluster membership: voters count for quorum, learners only receive the log."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


class ConfChangeType(IntEnum):
    """One-server-at-a-time membership changes."""

    ADD_VOTER = 0  # add a new voter, or promote a learner
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change; ``context`` is opaque (the runtime stores addresses there)."""

    type: ConfChangeType
    node_id: NodeId
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot of applied state; ``data`` is opaque to the core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


class MessageType(IntEnum):
    """Messages exchanged between cores (local-only kinds are never sent)."""

    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11  # follower -> leader: please confirm a read
    READ_INDEX_RESP = 12
    TRANSFER_LEADER = 13  # follower -> leader: please transfer to ``frm``
    SNAP_STATUS = 14  # local: runtime reports a snapshot send finished/failed
    UNREACHABLE = 15  # local: runtime reports a peer unreachable


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message. Unused fields keep their defaults.

    - ``log_term``/``index``: for APPEND the entry preceding ``entries``; for votes the
      candidate's last log term and index; for APPEND_RESP the (rejected or matched) index.
    - ``reject_hint``/``hint_term``: on a rejected APPEND_RESP, the follower's suggestion of
      where the leader should probe next (fast back-off by term).
    - ``context``: ReadIndex request id on heartbeats, READ_INDEX(_RESP); on VOTE/PRE_VOTE
      ``b"transfer"`` marks a leadership-transfer campaign that may bypass leases.
    """

    type: MessageType
    to: NodeId
    frm: NodeId
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    hint_term: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state the runtime may want to observe (not persisted)."""

    leader: NodeId | None = None
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request that became safe to serve once ``index`` is applied."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """Everything the core wants the runtime to do, in order.

    1. Persist ``snapshot`` (if any), ``entries`` and ``hard_state`` (if any), durably when
       ``must_sync``.
    2. Send ``messages`` (a leader may send them before its own persist completes).
    3. Apply ``committed_entries`` (all are already durable and committed).
    4. Serve ``read_states`` once applied index >= their index.
    Then call ``advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False

    def contains_updates(self) -> bool:
        return bool(
            self.soft_state is not None
            or self.hard_state is not None
            or self.entries
            or self.snapshot is not None
            or self.committed_entries
            or self.messages
            or self.read_states
        )


class RaftError(Exception):
    """Base error of the core."""


class NotLeaderError(RaftError):
    """A proposal or leader-only operation was made on a node that is not the leader."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDroppedError(RaftError):
    """The proposal cannot be accepted now (e.g. leadership transfer in progress)."""


class CompactedError(RaftError):
    """The requested index was compacted away into a snapshot."""


class UnavailableError(RaftError):
    """The requested index is beyond the last index in storage."""


class SnapshotOutOfDateError(RaftError):
    """A snapshot older than the current one was offered."""
