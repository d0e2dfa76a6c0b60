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

The parts: ``election`` (votes, campaigns, role changes), ``replication`` (appends,
snapshots, commit, reads, transfers, both sides), over ``base`` (shared state, helpers).

Each decision (votes, elections, role changes and why, rejected appends, snapshots, refused
reads) is logged at debug level on ``confman.raft`` (see ``logs``), at no cost when off.
"""

from __future__ import annotations

from collections.abc import Sequence

from confman.raft import confchange
from confman.raft.base import _HEARTBEATS, TRANSFER_CONTEXT
from confman.raft.config import Config
from confman.raft.election import Election
from confman.raft.log import RaftLog
from confman.raft.logs import enabled
from confman.raft.progress import Progress, ProgressState
from confman.raft.readonly import ReadOnly
from confman.raft.replication import Replication
from confman.raft.storage import LogStorage
from confman.raft.types import (
    EMPTY_HARD_STATE,
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
__all__ = ["TRANSFER_CONTEXT", "RawNode"]


class RawNode(Election, Replication):
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

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

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

    # -------------------------------------------------------- membership
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

    # ------------------------------------------------------------ inputs
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

    # -------------------------------------------------------------- step
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

    # --------------------------------------------------- ready / advance
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
