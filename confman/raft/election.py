"""``Election``: votes, pre-votes and campaigns, and the role changes they lead to (§5.2,
§5.4.1, thesis §9.6 and §4.2.3); a part of ``RawNode`` (module ``node``)."""

from __future__ import annotations

from confman.raft.base import TRANSFER_CONTEXT, CoreBase
from confman.raft.logs import enabled
from confman.raft.progress import Progress
from confman.raft.types import (
    Entry,
    EntryType,
    Message,
    MessageType,
    NodeId,
    Role,
)

MT = MessageType
_VOTE_RESP = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}


class Election(CoreBase):
    """Vote handling, campaigns and role changes of ``RawNode``."""

    def _in_lease(self) -> bool:
        if not self.cfg.check_quorum:
            return False
        if self.role == Role.LEADER:
            return True  # it steps down by itself when it loses its quorum
        return self.leader_contact_elapsed < self.cfg.election_tick_min

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.leader is None)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(m.index, m.log_term)
        resp = _VOTE_RESP[m.type]
        if can_vote and up_to_date:
            if enabled():
                self._note("vote-granted", kind=m.type.name, to=m.frm, candidate_term=m.term)
            self._send(Message(resp, m.frm, self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            if enabled():
                if not can_vote:
                    why = f"voted for {self.vote}" if self.vote else f"leader is {self.leader}"
                else:
                    why = (
                        f"candidate log ({m.log_term}, {m.index}) behind ours "
                        f"({self.log.last_term()}, {self.log.last_index()})"
                    )
                self._note(
                    "vote-refused", kind=m.type.name, to=m.frm, candidate_term=m.term, reason=why
                )
            self._send(Message(resp, m.frm, self.id, term=self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
            self._become_follower(m.term, m.frm, "a leader of this term exists")
            self._step_follower(m)
        elif (t == MT.PRE_VOTE_RESP and self.role == Role.PRE_CANDIDATE) or (
            t == MT.VOTE_RESP and self.role == Role.CANDIDATE
        ):
            self.votes.setdefault(m.frm, not m.reject)
            granted = sum(1 for p, v in self.votes.items() if v and p in self.voters)
            rejected = sum(1 for p, v in self.votes.items() if not v and p in self.voters)
            if granted >= self.quorum():
                if self.role == Role.PRE_CANDIDATE:
                    if enabled():
                        self._note("pre-vote-won", granted=granted, rejected=rejected)
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif rejected > len(self.voters) - self.quorum():
                pre = self.role == Role.PRE_CANDIDATE
                if enabled():
                    self._note(
                        "pre-vote-lost" if pre else "election-lost",
                        granted=granted,
                        rejected=rejected,
                    )
                self._become_follower(self.term, None, "pre-vote lost" if pre else "election lost")

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._rng.randrange(
            self.cfg.election_tick_min, self.cfg.election_tick_max
        )
        self.lead_transferee = None
        self.timeout_now_sent = False
        self.votes = {}
        self.read_only.reset()
        self.pending_reads = []
        nxt = self.log.last_index() + 1
        for p, pr in self.prs.items():
            learner = pr.is_learner
            fresh = Progress(nxt, self.cfg.max_inflight_msgs, learner, self.tick_count)
            if p == self.id:
                fresh.match = self.log.stable_last_index()
            self.prs[p] = fresh

    def _become_follower(self, term: int, leader: NodeId | None, why: str) -> None:
        if enabled() and (self.role != Role.FOLLOWER or term != self.term):
            self._note(
                "become-follower",
                reason=why,
                was=self.role.name.lower(),
                new_term=term,
                leader=leader,
                dropped_reads=len(self.read_only) + len(self.pending_reads),
            )
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if enabled():
            self._note(
                "become-pre-candidate" if pre else "become-candidate",
                campaign_term=self.term + 1,
                transfer=transfer,
                last_index=self.log.last_index(),
                last_term=self.log.last_term(),
            )
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.leader = None
            self.votes = {}
            # Pre-votes do not change term or vote; reset only the timer.
            self.election_elapsed = 0
            self.randomized_timeout = self._rng.randrange(
                self.cfg.election_tick_min, self.cfg.election_tick_max
            )
            term = self.term + 1
            kind = MT.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            term = self.term
            kind = MT.VOTE
        self.votes[self.id] = True
        if self._count_voters({p for p, v in self.votes.items() if v}) >= self.quorum():
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        ctx = TRANSFER_CONTEXT if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for p in self.voters:
            if p != self.id:
                self._send(
                    Message(
                        kind,
                        p,
                        self.id,
                        term=term,
                        index=last_index,
                        log_term=last_term,
                        context=ctx,
                    )
                )

    def _become_leader(self) -> None:
        if enabled():
            granted = sorted(p for p, v in self.votes.items() if v)
            self._note("become-leader", votes=",".join(granted), last_index=self.log.last_index())
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self.pending_conf_index = self.log.last_index()
        noop = Entry(self.term, self.log.last_index() + 1, EntryType.NORMAL, b"")
        self._append_entries([noop])
