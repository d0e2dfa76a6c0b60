"""``RawNode``: the Raft state machine of one member, driven by calls, answering in ``Ready``.

Modelled on etcd-io/raft. The core never performs I/O: ``tick()``, ``step()`` and the
proposal methods change its state and queue messages; ``ready()`` hands the runtime what
to persist, send and apply; ``advance()`` tells the core it was done.

Differences worth knowing:
- The leader counts itself towards a commit quorum only for entries it has persisted
  (reported through ``advance``), so it may send its appends before its own fsync.
- Check-quorum is evaluated every tick: a leader steps down as soon as it has not heard
  from a majority within ``election_tick_min`` ticks.
- A node ignores (pre-)vote requests while it believes a leader is alive (it heard from one
  within ``election_tick_min`` ticks, or it booted less than that long ago); this is what
  makes the leader lease (``lease_read_index``) safe. Leadership transfer bypasses it.

Each decision (votes, elections, role changes and why, rejected appends, snapshots, refused
reads) is logged at debug level on ``confman.raft`` (see ``logs``), at no cost when off.
"""

from __future__ import annotations

from collections.abc import Sequence

from confman.raft import confchange
from confman.raft.config import Config
from confman.raft.log import RaftLog
from confman.raft.logs import decision, enabled
from confman.raft.progress import Progress, ProgressState, quorum_index
from confman.raft.readonly import ReadOnly
from confman.raft.storage import LogStorage
from confman.raft.types import (
    EMPTY_HARD_STATE,
    CompactedError,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    NotLeaderError,
    ProposalDroppedError,
    ReadState,
    Ready,
    Role,
    SoftState,
)

MT = MessageType
TRANSFER_CONTEXT = b"transfer"
_VOTE_RESP = {MT.VOTE: MT.VOTE_RESP, MT.PRE_VOTE: MT.PRE_VOTE_RESP}


class RawNode:
    """One member's Raft state machine (see module docstring)."""

    def __init__(self, config: Config, storage: LogStorage) -> None:
        config.validate()
        self.cfg = config
        self.id: NodeId = config.id
        self._rng = config.rng
        self.log = RaftLog(storage)
        hs, cs = storage.initial_state()
        self.term = 0
        self.vote: NodeId | None = None
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.voters: tuple[NodeId, ...] = ()
        self.learners: tuple[NodeId, ...] = ()
        self.prs: dict[NodeId, Progress] = {}
        self.tick_count = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.leader_contact_elapsed = 0  # ticks since we heard from a live leader (or boot)
        self.randomized_timeout = 0
        self.lead_transferee: NodeId | None = None
        self.timeout_now_sent = False  # no lease reads in a term after a TimeoutNow
        self.pending_conf_index = 0
        self.votes: dict[NodeId, bool] = {}
        self.read_only = ReadOnly()
        self.pending_reads: list[tuple[bytes, NodeId]] = []
        self.msgs: list[Message] = []
        self._heartbeats_queued = False  # a heartbeat (response) is among ``msgs``
        self.read_states: list[ReadState] = []
        self._set_conf(cs)
        if hs != EMPTY_HARD_STATE:
            if not self.log.committed <= hs.commit <= self.log.last_index():
                raise ValueError(
                    f"hard state commit {hs.commit} outside the log "
                    f"[{self.log.committed}, {self.log.last_index()}]"
                )
            self.log.committed = hs.commit
            self.term = hs.term
            self.vote = hs.vote
        if config.applied > self.log.committed:
            raise ValueError(f"applied {config.applied} beyond commit {self.log.committed}")
        if config.applied < self.log.first_index() - 1:
            # The state machine must be restored from the snapshot before the core starts.
            raise ValueError(
                f"applied {config.applied} is below the snapshot at {self.log.first_index() - 1}"
            )
        self.log.applied = config.applied
        self._become_follower(self.term, None, "start")
        self._prev_soft = SoftState(self.leader, self.role)
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        #: (term, vote) of the last hard state the runtime confirmed durable (``advance``).
        self._stable_term_vote = (self.term, self.vote)
        self._ready_pending = False

    # ------------------------------------------------------------------ observers
    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def promotable(self) -> bool:
        return self.id in self.voters

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def ticks_since_contact(self) -> int:
        """Ticks since a follower heard from its leader; 0 for a leader with a quorum."""
        if self.role == Role.LEADER:
            return 0
        return self.leader_contact_elapsed

    def status(self) -> dict[str, object]:
        """A snapshot of the core's state, for status endpoints and metrics."""
        st: dict[str, object] = {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "role": self.role.name.lower(),
            "leader": self.leader,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "voters": list(self.voters),
            "learners": list(self.learners),
            "lead_transferee": self.lead_transferee,
        }
        if self.role == Role.LEADER:
            st["progress"] = {
                p: {**pr.as_dict(), "last_contact_ticks": self.tick_count - pr.last_contact}
                for p, pr in self.prs.items()
                if p != self.id
            }
        return st

    # ------------------------------------------------------------------ membership
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

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change (call when applying its log entry).

        An invalid change (already applied, unknown member) leaves the configuration as it
        is; the result is deterministic on every node.
        """
        try:
            cs = confchange.apply_to(self.conf_state(), cc)
        except confchange.ConfChangeError:
            return self.conf_state()
        self._set_conf(cs)
        if self.role == Role.LEADER:
            if not self.promotable():
                self._become_follower(self.term, None, "removed from the voters")
            else:
                if self.lead_transferee is not None and self.lead_transferee not in self.voters:
                    self.lead_transferee = None
                if self._maybe_commit():
                    self._bcast_append()
                for p in self.prs:
                    if p != self.id:
                        self._send_append(p)
        return cs

    # ------------------------------------------------------------------ inputs
    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self.tick_count += 1
        self.leader_contact_elapsed += 1
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.promotable() and self.election_elapsed >= self.randomized_timeout:
                if enabled():
                    self._note(
                        "election-timeout",
                        ticks=self.election_elapsed,
                        leader_heard_ticks_ago=self.leader_contact_elapsed,
                    )
                self.election_elapsed = 0
                self.campaign()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.cfg.check_quorum and not self._quorum_active():
            if enabled():
                limit = self.cfg.election_tick_min
                heard = [
                    p
                    for p in self.voters
                    if p != self.id and self.tick_count - self.prs[p].last_contact < limit
                ]
                self._note(
                    "check-quorum-lost", heard_from=",".join(heard) or "-", within_ticks=limit
                )
            self._become_follower(self.term, None, "check-quorum")
            return
        if self.lead_transferee is not None and self.election_elapsed >= self.cfg.election_tick_min:
            self.lead_transferee = None  # transfer timed out
        if self.election_elapsed >= self.cfg.election_tick_min:
            self.election_elapsed = 0
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.read_only.last_pending())
        # Retry snapshots that were lost in flight.
        for p, pr in self.prs.items():
            if (
                p != self.id
                and pr.state == ProgressState.SNAPSHOT
                and self.tick_count - pr.snapshot_tick >= self.cfg.election_tick_min
            ):
                pr.pending_snapshot = 0
                pr.become_probe()
                self._send_append(p)

    def _quorum_active(self) -> bool:
        limit = self.cfg.election_tick_min
        active = 0
        for p in self.voters:
            if p == self.id or self.tick_count - self.prs[p].last_contact < limit:
                active += 1
        return active >= self.quorum()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round when enabled)."""
        if not self.promotable():
            return
        if self.role == Role.LEADER:
            return
        self._campaign(pre=self.cfg.pre_vote, transfer=False)

    def propose(self, data: bytes) -> int:
        """Append one entry; returns its index. Leader only."""
        return self.propose_many([data])

    def propose_many(self, datas: Sequence[bytes]) -> int:
        """Append entries in one go; returns the index of the first (consecutive after)."""
        self._check_can_propose()
        first = self.log.last_index() + 1
        ents = [Entry(self.term, first + i, EntryType.NORMAL, d) for i, d in enumerate(datas)]
        self._append_entries(ents)
        return first

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a one-server membership change; returns its log index. Leader only."""
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError("a configuration change is still being applied")
        if not self._committed_in_term():
            # Single-server changes are only safe once the leader has committed an entry
            # of its own term (the known flaw of one-at-a-time changes, raft-dev 2015).
            raise ProposalDroppedError("the new leader has not committed an entry yet")
        confchange.apply_to(self.conf_state(), cc)  # raises ConfChangeError if invalid
        idx = self.log.last_index() + 1
        ent = Entry(self.term, idx, EntryType.CONF_CHANGE, confchange.encode_conf_change(cc))
        self._append_entries([ent])
        self.pending_conf_index = idx
        return idx

    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeaderError(self.leader)
        if self.lead_transferee is not None:
            raise ProposalDroppedError(f"leadership is being transferred to {self.lead_transferee}")

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a ``ReadState`` with ``context`` appears once safe."""
        if self.role == Role.LEADER:
            self._handle_read_request(context, self.id)
        elif self.leader is not None:
            self._send(Message(MT.READ_INDEX, self.leader, self.id, context=context))
        else:
            if enabled():
                self._note("read-index-refused", reason="no leader known")
            raise NotLeaderError(None)

    def lease_read_index(self) -> int | None:
        """Commit index a leader may serve a read at without a round trip, or None.

        Valid while a majority acknowledged a heartbeat sent less than ``lease_tick`` ticks
        ago (those followers refuse to vote for anyone else until their election timeout),
        and the leader has committed an entry of its term and is not transferring away.
        """
        if (
            self.role != Role.LEADER
            or self.lead_transferee is not None
            or self.timeout_now_sent
            or not self._committed_in_term()
        ):
            return None
        lease = self.cfg.lease_tick or 0
        fresh = 0
        for p in self.voters:
            if p == self.id or self.tick_count - self.prs[p].ack_sent_tick < lease:
                fresh += 1
        return self.log.committed if fresh >= self.quorum() else None

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` (forwarded to the leader when called elsewhere)."""
        if self.role != Role.LEADER:
            if self.leader is None:
                raise NotLeaderError(None)
            self._send(
                Message(MT.TRANSFER_LEADER, self.leader, self.id, context=to.encode("utf-8"))
            )
            return
        self._handle_transfer(to)

    def report_unreachable(self, peer: NodeId) -> None:
        """The runtime could not deliver to ``peer``: stop pipelining to it."""
        pr = self.prs.get(peer)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        """The runtime finished (or failed) sending a snapshot to ``peer``."""
        pr = self.prs.get(peer)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = ok  # wait for the follower's reply before probing again

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        """Deliver a message from a peer."""
        if m.to != self.id:
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                if not force and self._in_lease():
                    if enabled():
                        self._note(
                            "vote-ignored",
                            kind=m.type.name,
                            candidate=m.frm,
                            candidate_term=m.term,
                            reason="a leader is alive (lease)",
                            leader=self.leader,
                            leader_heard_ticks_ago=self.leader_contact_elapsed,
                        )
                    return  # a leader is alive: ignore the disruptive candidate
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change our term
            else:
                if enabled():
                    self._note("term-bump", new_term=m.term, by=m.type.name, frm=m.frm)
                leader = m.frm if m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT) else None
                self._become_follower(m.term, leader, "newer term")
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APPEND,
            ):
                # Tell a stale leader about the newer term so it steps down.
                self._send(Message(MT.APPEND_RESP, m.frm, self.id, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, m.frm, self.id, term=self.term, reject=True))
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

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

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APPEND:
            self._heard_from_leader(m.frm)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self._heard_from_leader(m.frm)
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message(MT.HEARTBEAT_RESP, m.frm, self.id, index=m.index, context=m.context))
        elif t == MT.SNAPSHOT:
            self._heard_from_leader(m.frm)
            self._handle_snapshot(m)
        elif t == MT.TIMEOUT_NOW:
            if self.promotable():
                if enabled():
                    self._note("timeout-now", frm=m.frm)
                self._campaign(pre=False, transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif t == MT.TRANSFER_LEADER:
            if self.leader is not None:
                self._send(Message(MT.TRANSFER_LEADER, self.leader, self.id, context=m.context))
        elif t == MT.READ_INDEX:
            if self.leader is not None:
                self._send(Message(MT.READ_INDEX, self.leader, self.id, context=m.context))
            elif enabled():
                self._note("read-index-refused", frm=m.frm, reason="no leader known")

    def _heard_from_leader(self, leader: NodeId) -> None:
        self.election_elapsed = 0
        self.leader_contact_elapsed = 0
        self.leader = leader

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

    def _step_leader(self, m: Message) -> None:
        t = m.type
        pr = self.prs.get(m.frm)
        if t == MT.READ_INDEX:
            self._handle_read_request(m.context, m.frm)
            return
        if t == MT.TRANSFER_LEADER:
            target = m.context.decode("utf-8", "replace") if m.context else m.frm
            self._handle_transfer(target)
            return
        if pr is None:
            return
        if t == MT.APPEND_RESP:
            pr.last_contact = self.tick_count
            self._handle_append_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.last_contact = self.tick_count
            pr.ack_sent_tick = max(pr.ack_sent_tick, m.index)
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context and not pr.is_learner:
                acks = self.read_only.recv_ack(m.frm, m.context)
                if acks is not None and self._count_voters(acks | {self.id}) >= self.quorum():
                    for rs in self.read_only.advance(m.context):
                        self._respond_read(rs.context, rs.req_from, rs.index)

    def _count_voters(self, ids: set[NodeId]) -> int:
        return sum(1 for p in ids if p in self.voters)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            hint = m.reject_hint
            if m.hint_term > 0:
                hint = self.log.find_conflict_by_term(hint, m.hint_term)
            if enabled():
                self._note(
                    "append-rejected-by",
                    peer=m.frm,
                    index=m.index,
                    hint=m.reject_hint,
                    hint_term=m.hint_term,
                    probe_from=hint + 1,
                )
            if pr.maybe_decr_to(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._bcast_append()
        elif old_paused:
            self._send_append(m.frm)
        while self._send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            if enabled():
                self._note("append-stale", frm=m.frm, index=m.index, commit=self.log.committed)
            self._send(Message(MT.APPEND_RESP, m.frm, self.id, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, list(m.entries))
        if last_new is not None:
            self._send(Message(MT.APPEND_RESP, m.frm, self.id, index=last_new))
            return
        hint = min(m.index, self.log.last_index())
        hint = self.log.find_conflict_by_term(hint, m.log_term)
        if enabled():
            self._note(
                "append-rejected",
                frm=m.frm,
                index=m.index,
                log_term=m.log_term,
                our_term_there=self.log.term(m.index),
                last_index=self.log.last_index(),
                hint=hint,
                hint_term=self.log.term(hint),
            )
        self._send(
            Message(
                MT.APPEND_RESP,
                m.frm,
                self.id,
                index=m.index,
                reject=True,
                reject_hint=hint,
                hint_term=self.log.term(hint),
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        meta = snap.meta
        if meta.index <= self.log.committed:
            if enabled():
                self._note("snapshot-ignored", index=meta.index, commit=self.log.committed)
            self._send(Message(MT.APPEND_RESP, m.frm, self.id, index=self.log.committed))
            return
        if self.log.matches(meta.index, meta.term):
            # We already have the entries: just fast-forward the commit index.
            if enabled():
                self._note("snapshot-fast-forward", index=meta.index, snap_term=meta.term)
            self.log.commit_to(meta.index)
        else:
            if enabled():
                self._note(
                    "snapshot-restore",
                    index=meta.index,
                    snap_term=meta.term,
                    voters=",".join(meta.conf_state.voters),
                )
            self.log.restore(snap)
            self._set_conf(meta.conf_state)
        self._send(Message(MT.APPEND_RESP, m.frm, self.id, index=self.log.last_index()))

    # ------------------------------------------------------------------ roles
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

    # ------------------------------------------------------------------ leader helpers
    def _append_entries(self, ents: list[Entry]) -> None:
        self.log.append(ents)
        self._bcast_append()

    def _maybe_commit(self) -> bool:
        matches = [self.prs[p].match for p in self.voters if p in self.prs]
        if len(matches) < len(self.voters):
            return False
        mci = quorum_index(matches)
        committed = self.log.maybe_commit(mci, self.term)
        if committed and self.pending_reads and self._committed_in_term():
            pending, self.pending_reads = self.pending_reads, []
            for ctx, frm in pending:
                self._handle_read_request(ctx, frm)
        return committed

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _bcast_append(self) -> None:
        for p in self.prs:
            if p != self.id:
                self._send_append(p)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        for p, pr in self.prs.items():
            if p != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(
                    Message(
                        MT.HEARTBEAT, p, self.id, commit=commit, index=self.tick_count, context=ctx
                    )
                )

    def _send_append(self, to: NodeId, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        if prev < self.log.first_index() - 1:
            return self._send_snapshot(to, pr)
        log_term = self.log.term(prev)
        try:
            ents = self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APPEND,
                to,
                self.id,
                index=prev,
                log_term=log_term,
                entries=tuple(ents),
                commit=self.log.committed,
            )
        )
        if ents:
            last = ents[-1].index
            if pr.state == ProgressState.REPLICATE:
                pr.next = last + 1
                pr.inflights.add(last)
            else:
                pr.probe_sent = True
        return True

    def _send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        snap = self.log.snapshot()
        if snap.is_empty:
            return False
        if enabled():
            self._note("snapshot-send", to=to, index=snap.meta.index, peer_next=pr.next)
        self._send(Message(MT.SNAPSHOT, to, self.id, snapshot=snap))
        pr.become_snapshot(snap.meta.index, self.tick_count)
        return True

    def _handle_read_request(self, ctx: bytes, frm: NodeId) -> None:
        if not self._committed_in_term():
            if enabled():
                self._note("read-index-deferred", frm=frm, reason="no entry of this term committed")
            self.pending_reads.append((ctx, frm))
            return
        if len(self.voters) == 1 and self.id in self.voters:
            self._respond_read(ctx, frm, self.log.committed)
            return
        if self.read_only.add_request(self.log.committed, ctx, frm):
            self.read_only.recv_ack(self.id, ctx)
            self._bcast_heartbeat(ctx)

    def _respond_read(self, ctx: bytes, frm: NodeId, index: int) -> None:
        if frm == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(Message(MT.READ_INDEX_RESP, frm, self.id, index=index, context=ctx))

    def _handle_transfer(self, to: NodeId) -> None:
        if to == self.id or to not in self.voters:
            return
        if self.lead_transferee == to:
            return
        if enabled():
            self._note("transfer-start", to=to, match=self.prs[to].match)
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to)

    def _send_timeout_now(self, to: NodeId) -> None:
        # A delayed TimeoutNow may start an election that bypasses followers' leases at
        # any later point of this term, so lease reads stop for the rest of the term.
        self.timeout_now_sent = True
        self._send(Message(MT.TIMEOUT_NOW, to, self.id))

    def _note(self, event: str, **fields: object) -> None:
        decision(self.id, self.term, event, **fields)

    def _send(self, m: Message) -> None:
        if m.term == 0:
            m = _with_term(m, self.term)
        if m.type in _HEARTBEATS:
            self._heartbeats_queued = True
        self.msgs.append(m)

    # ------------------------------------------------------------------ ready / advance
    def _soft(self) -> SoftState:
        return SoftState(self.leader, self.role)

    def _hard(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def has_ready(self) -> bool:
        """Whether ``ready()`` would return anything."""
        return bool(
            self.msgs
            or self.read_states
            or self.log.unstable.entries
            or self.log.unstable.snapshot is not None
            or self.log.has_next_committed()
            or self._soft() != self._prev_soft
            or self._hard() != self._prev_hard
        )

    def ready(self) -> Ready:
        """What the runtime must persist, send and apply now; call ``advance`` after."""
        if self._ready_pending:
            raise RuntimeError("ready() called again before advance()")
        rd = Ready()
        soft = self._soft()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = self._hard()
        if hard != self._prev_hard:
            rd.hard_state = hard
            rd.must_sync = hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote
            self._prev_hard = hard
        rd.entries = list(self.log.unstable.entries)
        rd.snapshot = self.log.unstable.snapshot
        rd.committed_entries = self.log.next_committed(self.cfg.max_committed_size_per_ready)
        rd.messages, self.msgs = self.msgs, []
        self._heartbeats_queued = False
        rd.read_states, self.read_states = self.read_states, []
        if rd.entries or rd.snapshot is not None:
            rd.must_sync = True
        self._ready_pending = True
        return rd

    def take_heartbeats(self) -> list[Message]:
        """Heartbeats and heartbeat responses that may be sent now, ahead of ``ready()``.

        They promise nothing about the log, so a runtime may send them while a Ready is still
        being persisted (a slow fsync must not look like a dead leader or a lost quorum).
        Only when the current term and vote are already durable: a message must never carry
        a term this node could forget in a crash. Other messages stay for ``ready()``.
        """
        if not self._heartbeats_queued or (self.term, self.vote) != self._stable_term_vote:
            return []
        out = [m for m in self.msgs if m.type in _HEARTBEATS]
        self.msgs = [m for m in self.msgs if m.type not in _HEARTBEATS]
        self._heartbeats_queued = False
        return out

    def advance(self, rd: Ready) -> None:
        """The runtime persisted, sent and applied what ``rd`` asked for."""
        self._ready_pending = False
        if rd.hard_state is not None:
            self._stable_term_vote = (rd.hard_state.term, rd.hard_state.vote)
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.meta.index)
            self.log.applied_to(rd.snapshot.meta.index)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == Role.LEADER and self.log.term(last.index) == last.term:
                me = self.prs.get(self.id)
                if me is not None and me.maybe_update(last.index) and self._maybe_commit():
                    self._bcast_append()


_HEARTBEATS = frozenset({MT.HEARTBEAT, MT.HEARTBEAT_RESP})


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
