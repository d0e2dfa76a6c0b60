"""``CoreBase``: the state every part of ``RawNode`` shares, and the helpers they all use.

``RawNode`` (module ``node``) is assembled from ``Election`` (module ``election``: votes,
campaigns, role changes) and ``Replication`` (module ``replication``: the leader's and the
follower's side of the log, reads, transfers) over this base. The attributes are set in
``RawNode.__init__``; the few methods one part calls in another are declared here.
"""

from __future__ import annotations

import random

from confman.raft.config import Config
from confman.raft.log import RaftLog
from confman.raft.logs import decision
from confman.raft.progress import Progress
from confman.raft.readonly import ReadOnly
from confman.raft.types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
)

MT = MessageType
#: ``context`` of a (pre-)vote request of a leadership transfer: it may bypass leases.
TRANSFER_CONTEXT = b"transfer"
_HEARTBEATS = frozenset({MT.HEARTBEAT, MT.HEARTBEAT_RESP})


class CoreBase:
    """Shared state and helpers of ``RawNode``'s parts (see module docstring)."""

    cfg: Config
    id: NodeId
    _rng: random.Random
    log: RaftLog
    term: int
    vote: NodeId | None
    role: Role
    leader: NodeId | None
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    prs: dict[NodeId, Progress]
    tick_count: int
    election_elapsed: int
    heartbeat_elapsed: int
    leader_contact_elapsed: int  # ticks since we heard from a live leader (or boot)
    randomized_timeout: int
    lead_transferee: NodeId | None
    timeout_now_sent: bool  # no lease reads in a term after a TimeoutNow
    pending_conf_index: int
    votes: dict[NodeId, bool]
    read_only: ReadOnly
    pending_reads: list[tuple[bytes, NodeId]]
    msgs: list[Message]
    _heartbeats_queued: bool  # a heartbeat (response) is among ``msgs``
    read_states: list[ReadState]

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def promotable(self) -> bool:
        return self.id in self.voters

    def _count_voters(self, ids: set[NodeId]) -> int:
        return sum(1 for p in ids if p in self.voters)

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _set_conf(self, cs: ConfState) -> None:
        self.voters = tuple(cs.voters)
        self.learners = tuple(cs.learners)
        members = (*self.voters, *self.learners)  # a deterministic order for broadcasts
        for p in list(self.prs):
            if p not in members:
                del self.prs[p]
        nxt = self.log.last_index() + 1
        for p in members:
            learner = p in self.learners
            pr = self.prs.get(p)
            if pr is None:
                self.prs[p] = Progress(nxt, self.cfg.max_inflight_msgs, learner, self.tick_count)
            else:
                pr.is_learner = learner

    def _note(self, event: str, **fields: object) -> None:
        decision(self.id, self.term, event, **fields)

    def _send(self, m: Message) -> None:
        if m.term == 0:
            m = _with_term(m, self.term)
        if m.type in _HEARTBEATS:
            self._heartbeats_queued = True
        self.msgs.append(m)

    # -- defined by the other parts ---------------------------------------------------
    def _become_follower(self, term: int, leader: NodeId | None, why: str) -> None:
        raise NotImplementedError  # Election

    def _campaign(self, pre: bool, transfer: bool) -> None:
        raise NotImplementedError  # Election

    def _step_follower(self, m: Message) -> None:
        raise NotImplementedError  # Replication

    def _append_entries(self, ents: list[Entry]) -> None:
        raise NotImplementedError  # Replication


def _with_term(m: Message, term: int) -> Message:
    return Message(
        m.type,
        m.to,
        m.frm,
        term,
        m.log_term,
        m.index,
        m.entries,
        m.commit,
        m.reject,
        m.reject_hint,
        m.hint_term,
        m.snapshot,
        m.context,
    )
