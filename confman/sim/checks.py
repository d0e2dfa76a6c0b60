"""Safety invariants of Raft, checked incrementally as the simulated cluster runs.

The cluster reports what each node does (roles, persisted entries and hard state, applied
entries, snapshots, read results); ``Checker`` keeps the global knowledge needed to judge
it and raises ``Violation`` naming the invariant, the nodes, the term and the index.
Every check costs O(new facts), except leader completeness, which walks the new leader's
log once per election.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from confman.raft.storage import LogStorage
from confman.raft.types import Entry, EntryType, HardState, NodeId


class _Terms(Protocol):
    """The part of a log the commit checks read (``RaftLog`` and ``LogStorage`` have it)."""

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int: ...


class Violation(Exception):
    """A broken invariant: which one, on which nodes, at which term and index."""

    def __init__(
        self,
        invariant: str,
        detail: str,
        nodes: tuple[NodeId, ...] = (),
        term: int | None = None,
        index: int | None = None,
    ) -> None:
        self.invariant = invariant
        self.detail = detail
        self.nodes = nodes
        self.term = term
        self.index = index
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [f"nodes={','.join(self.nodes)}" if self.nodes else ""]
        if self.term is not None:
            where.append(f"term={self.term}")
        if self.index is not None:
            where.append(f"index={self.index}")
        return f"{self.invariant}: {self.detail} [{' '.join(w for w in where if w)}]"


@dataclass(slots=True)
class _Known:
    """One entry known to be committed (some node applied it)."""

    term: int
    data: bytes
    type: EntryType
    node: NodeId


def chain_digest(prev: int, entry: Entry) -> int:
    """State digest after applying ``entry`` on a state whose digest is ``prev``."""
    return hash((prev, entry.index, entry.term, entry.data))


class Checker:
    """Global knowledge of one run and the checks against it."""

    def __init__(self, commit_rule: bool = True) -> None:
        #: Check the §5.4.2 commit rule directly; without it, a leader that commits an
        #: old-term entry by counting replicas is caught only once the entry is lost.
        self.commit_rule = commit_rule
        self.leaders: dict[int, NodeId] = {}  # term -> its leader
        self.committed: dict[int, _Known] = {}  # index -> entry some node applied
        self.commit_terms: dict[int, int] = {}  # index -> term of the entry committed there
        self.digests: dict[int, int] = {}  # index -> state digest after applying it
        self.max_commit = 0  # highest commit index any node has reported
        self.max_commit_node: NodeId = ""
        #: (commit index, term of the node that first reported it), ascending.
        self.watermarks: list[tuple[int, int]] = []
        self._commit: dict[NodeId, int] = {}  # per incarnation, to check monotonicity
        self._hard: dict[NodeId, HardState] = {}  # last persisted hard state per node
        self._logged: dict[tuple[int, int], tuple[EntryType, bytes, int, NodeId]] = {}
        self._payloads: dict[bytes, int] = {}  # client payload -> index it was applied at
        self.checked_leaders = 0

    # -- elections ----------------------------------------------------------------------
    def leader(self, node: NodeId, term: int) -> bool:
        """``node`` is leader in ``term``; True the first time this term is seen."""
        other = self.leaders.get(term)
        if other is None:
            self.leaders[term] = node
            return True
        if other != node:
            raise Violation(
                "election-safety",
                f"two leaders in one term: {other} and {node}",
                (other, node),
                term,
            )
        return False

    def leader_completeness(self, node: NodeId, term: int, log: _Terms) -> None:
        """A new leader of ``term`` holds every entry committed in earlier terms."""
        self.checked_leaders += 1
        upto = 0
        for commit, t in self.watermarks:
            if t < term and commit > upto:
                upto = commit
        if upto == 0:
            return
        last = log.last_index()
        if last < upto:
            raise Violation(
                "leader-completeness",
                f"new leader's log ends at {last}, entries up to {upto} were committed "
                f"(reported by {self.max_commit_node})",
                (node,),
                term,
                last + 1,
            )
        terms = self.commit_terms
        for i in range(log.first_index(), upto + 1):
            known = terms.get(i)
            if known is not None and log.term(i) != known:
                raise Violation(
                    "leader-completeness",
                    f"new leader has term {log.term(i)} where term {known} was committed",
                    (node,),
                    term,
                    i,
                )

    # -- commit index -------------------------------------------------------------------
    def commit(
        self, node: NodeId, commit: int, term: int, log: _Terms, leader: bool = False
    ) -> None:
        """``node`` reports ``commit``: never decreasing, and agreeing on committed terms.

        With ``leader``, also the commit rule of §5.4.2: a leader moves its commit index
        only onto an entry of its own term (older entries commit indirectly).
        """
        prev = self._commit.get(node, 0)
        if commit == prev:
            return
        if leader and self.commit_rule and commit > prev and log.term(commit) != term:
            raise Violation(
                "leader-commit-rule",
                f"leader advanced its commit index onto an entry of term {log.term(commit)}",
                (node,),
                term,
                commit,
            )
        if commit < prev:
            raise Violation(
                "commit-monotonic",
                f"commit index went back from {prev} to {commit}",
                (node,),
                term,
                commit,
            )
        self._commit[node] = commit
        terms = self.commit_terms
        for i in range(max(prev + 1, log.first_index()), commit + 1):
            t = log.term(i)
            known = terms.setdefault(i, t)
            if known != t:
                raise Violation(
                    "committed-lost",
                    f"{node} committed an entry of term {t} where term {known} was committed",
                    (node,),
                    t,
                    i,
                )
        if commit > self.max_commit:
            self.max_commit = commit
            self.max_commit_node = node
            self.watermarks.append((commit, term))

    def restarted(self, node: NodeId, persisted: HardState, commit: int) -> None:
        """A restarted node must not start below the commit index it had persisted."""
        if commit < persisted.commit:
            raise Violation(
                "commit-monotonic",
                f"restarted with commit {commit} below its persisted commit {persisted.commit}",
                (node,),
                persisted.term,
                commit,
            )
        self._commit[node] = commit

    # -- persistence --------------------------------------------------------------------
    def hard_state(self, node: NodeId, hs: HardState) -> None:
        """Persisted term never decreases, nor does commit; a vote never changes in a term."""
        prev = self._hard.get(node)
        if prev is not None:
            if hs.term < prev.term:
                raise Violation(
                    "durable-state",
                    f"persisted term went back from {prev.term} to {hs.term}",
                    (node,),
                    hs.term,
                )
            if hs.term == prev.term and prev.vote is not None and hs.vote != prev.vote:
                raise Violation(
                    "durable-state",
                    f"vote changed from {prev.vote} to {hs.vote} in one term",
                    (node,),
                    hs.term,
                )
            if hs.commit < prev.commit:
                raise Violation(
                    "commit-monotonic",
                    f"persisted commit went back from {prev.commit} to {hs.commit}",
                    (node,),
                    hs.term,
                    hs.commit,
                )
        self._hard[node] = hs

    def vote_sent(self, node: NodeId, term: int, candidate: NodeId, hs: HardState) -> None:
        """A granted vote leaves the node only once it is durable (or a later term is)."""
        if hs.term < term or (hs.term == term and hs.vote != candidate):
            raise Violation(
                "durable-state",
                f"vote for {candidate} sent while disk holds term {hs.term} vote {hs.vote}",
                (node, candidate),
                term,
            )

    def before_append(
        self, node: NodeId, log: LogStorage, entries: list[Entry], commit: int
    ) -> None:
        """Appending may replace a conflicting suffix, never a committed or a matching one."""
        first = entries[0].index
        old_last = log.last_index()
        if first > old_last:
            return
        lo = max(first, log.first_index())
        conflict = None
        for e in entries:
            if e.index < lo:
                continue
            if e.index > old_last:
                break
            if log.term(e.index) != e.term:
                conflict = e.index
                break
        if conflict is None:
            if entries[-1].index < old_last:
                raise Violation(
                    "log-truncation",
                    f"log truncated from {old_last} to {entries[-1].index} "
                    "without a conflicting entry",
                    (node,),
                    entries[-1].term,
                    entries[-1].index + 1,
                )
            return
        if conflict <= commit:
            raise Violation(
                "committed-lost",
                f"committed entry (commit {commit}) overwritten by term {entries[0].term}",
                (node,),
                log.term(conflict),
                conflict,
            )

    def logged(self, node: NodeId, log: LogStorage, entries: list[Entry]) -> None:
        """Log matching: an (index, term) names one entry and one predecessor term."""
        seen = self._logged
        first = log.first_index()
        for e in entries:
            if e.index < first:
                continue
            prev_term = log.term(e.index - 1)
            key = (e.index, e.term)
            mine = (e.type, e.data, prev_term, node)
            other = seen.get(key)
            if other is None:
                seen[key] = mine
            elif other[0] != e.type or other[1] != e.data or other[2] != prev_term:
                what = "data" if other[1] != e.data else "preceding term"
                raise Violation(
                    "log-matching",
                    f"same index and term but different {what} on {other[3]} and {node}",
                    (other[3], node),
                    e.term,
                    e.index,
                )

    # -- state machine ------------------------------------------------------------------
    def applied(self, node: NodeId, entry: Entry, applied_before: int, digest: int) -> None:
        """Entries apply in order, once, and every node applies the same one at an index."""
        i = entry.index
        if i != applied_before + 1:
            kind = "repeat" if i <= applied_before else "gap"
            raise Violation(
                "apply-order",
                f"{kind}: applied {i} after {applied_before}",
                (node,),
                entry.term,
                i,
            )
        known = self.committed.get(i)
        if known is None:
            self.committed[i] = _Known(entry.term, entry.data, entry.type, node)
        elif known.term != entry.term or known.data != entry.data:
            raise Violation(
                "state-machine-safety",
                f"{node} applied term {entry.term} where {known.node} applied term {known.term}",
                (known.node, node),
                entry.term,
                i,
            )
        d = self.digests.setdefault(i, digest)
        if d != digest:
            raise Violation(
                "state-machine-safety",
                f"state of {node} diverged before index {i}",
                (node,),
                entry.term,
                i,
            )
        if entry.data and entry.type == EntryType.NORMAL:
            at = self._payloads.setdefault(entry.data, i)
            if at != i:
                raise Violation(
                    "duplicate-apply",
                    f"payload {entry.data!r} applied at {at} and {i}",
                    (node,),
                    entry.term,
                    i,
                )

    def restored(self, node: NodeId, index: int, term: int, digest: int) -> None:
        """A snapshot's state equals the state every node had at its index."""
        d = self.digests.setdefault(index, digest)
        if d != digest:
            raise Violation(
                "state-machine-safety",
                f"snapshot state differs from applied state at {index}",
                (node,),
                term,
                index,
            )
        known = self.committed.get(index)
        if known is not None and known.term != term:
            raise Violation(
                "state-machine-safety",
                f"snapshot term {term} differs from applied term {known.term}",
                (node, known.node),
                term,
                index,
            )

    def applied_at(self, payload: bytes) -> int | None:
        """Index at which a client payload was applied, if any node applied it."""
        return self._payloads.get(payload)

    # -- reads --------------------------------------------------------------------------
    def read_floor(self) -> int:
        """A read starting now must reflect at least this index."""
        return self.max_commit

    def read_result(self, node: NodeId, kind: str, index: int, floor: int, term: int) -> None:
        """A linearizable read must not miss anything committed before it began."""
        if index < floor:
            raise Violation(
                "linearizable-read",
                f"{kind} read returned index {index}, but {floor} was committed before it began",
                (node,),
                term,
                index,
            )
