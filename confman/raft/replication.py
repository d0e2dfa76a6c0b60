"""``Replication``: the log's way from leader to followers -- appends, heartbeats, snapshots,
commit (§5.3, §5.4.2), ReadIndex (thesis §6.4), leadership transfer (thesis §3.10) -- on both
sides; a part of ``RawNode`` (module ``node``)."""

from __future__ import annotations

from confman.raft.base import CoreBase
from confman.raft.logs import enabled
from confman.raft.progress import Progress, ProgressState, quorum_index
from confman.raft.types import (
    CompactedError,
    Entry,
    Message,
    MessageType,
    NodeId,
    ReadState,
)

MT = MessageType


class Replication(CoreBase):
    """The leader's and the follower's side of log replication in ``RawNode``."""

    # ------------------------------------------------------------ leader
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

    # ---------------------------------------------------------- follower
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
