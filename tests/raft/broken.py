"""Deliberately broken variants of the core and of the Ready plan, for tests only.

The shipped core (``confman.raft``) has no bug switches: each bug here is a subclass of
``RawNode`` (or of its ``RaftLog``) or a wrapped ``plan_ready``. ``variant(bugs)`` combines
them into a ``Variant`` the simulator runs; ``core(bugs)`` is the core alone (for the unit
test harness). ``BUG_PROFILES`` names the fault mix that exposes each bug quickly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from confman.raft.config import Config
from confman.raft.log import RaftLog
from confman.raft.node import RawNode
from confman.raft.ready import Send, Step, plan_ready
from confman.raft.storage import LogStorage, MemoryStorage
from confman.raft.types import Entry, HardState, NodeId, Ready
from confman.sim.model import RunResult, Variant
from confman.sim.runner import run_seed as _run_seed


class _TruncatingLog(RaftLog):
    """PySyncObj's bug: an append drops everything after its prev index, not only conflicts."""

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: list[Entry]
    ) -> int | None:
        if not self.matches(index, log_term):
            return None
        if ents:
            self.unstable.truncate_and_append(ents)
        last_new = index + len(ents)
        self.commit_to(min(committed, last_new))
        return last_new


class _AnyTermLog(RaftLog):
    """Figure 8's bug: commit an entry of an older term by counting its replicas."""

    def maybe_commit(self, max_index: int, term: int) -> bool:
        if max_index > self.committed:
            self.commit_to(max_index)
            return True
        return False


class _AnyLogIsUpToDate(RaftLog):
    """§5.4.1 forgotten: every candidate's log counts as up to date."""

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


class TruncateOnAppend(RawNode):
    def __init__(self, config: Config, storage: LogStorage) -> None:
        super().__init__(config, storage)
        _swap_log(self, _TruncatingLog)


class CommitOldTerms(RawNode):
    def __init__(self, config: Config, storage: LogStorage) -> None:
        super().__init__(config, storage)
        _swap_log(self, _AnyTermLog)


class VoteWithoutLogCheck(RawNode):
    def __init__(self, config: Config, storage: LogStorage) -> None:
        super().__init__(config, storage)
        _swap_log(self, _AnyLogIsUpToDate)


class NoPersistVote(RawNode):
    """A changed vote is not reported as hard state to persist."""

    def _hard(self) -> HardState:
        return HardState(self.term, None, self.log.committed)


class ReadIndexNoHeartbeat(RawNode):
    """ReadIndex served from the commit index without confirming leadership."""

    def _handle_read_request(self, ctx: bytes, frm: NodeId) -> None:
        self._respond_read(ctx, frm, self.log.committed)


def _swap_log(node: RawNode, cls: type[RaftLog]) -> None:
    """Give ``node``'s log the broken behaviour of ``cls`` (a RaftLog subclass, no new state)."""
    bases = tuple(dict.fromkeys((cls, *type(node.log).__mro__[:-1])))
    node.log.__class__ = type(cls.__name__, bases, {}) if len(bases) > 2 else cls


def plan_send_before_persist(
    rd: Ready, *, leader: bool, durable: tuple[int, NodeId | None], latest: HardState
) -> tuple[Step, ...]:
    """Every message leaves before the snapshot, entries and hard state are durable."""
    steps = plan_ready(rd, leader=leader, durable=durable, latest=latest)
    msgs = [m for s in steps if isinstance(s, Send) for m in s.messages]
    rest = tuple(s for s in steps if not isinstance(s, Send))
    return ((Send(msgs, durable=False),) if msgs else ()) + rest


#: Broken cores: bug name -> RawNode subclass.
CORES: dict[str, type[RawNode]] = {
    "commit_old_terms": CommitOldTerms,
    "no_persist_vote": NoPersistVote,
    "vote_without_log_check": VoteWithoutLogCheck,
    "read_index_no_heartbeat": ReadIndexNoHeartbeat,
    "truncate_on_append": TruncateOnAppend,
}
#: Broken Ready plans: bug name -> planner.
PLANS = {"ready_send_before_persist": plan_send_before_persist}
KNOWN_BUGS = frozenset(CORES) | frozenset(PLANS)

#: Which targeted profile (``confman.sim.scenarios``) exposes which bug.
BUG_PROFILES: dict[str, str] = {
    "commit_old_terms": "bug_figure8",
    "no_persist_vote": "bug_vote_crash",
    "vote_without_log_check": "bug_stale_log",
    "read_index_no_heartbeat": "bug_stale_read",
    "truncate_on_append": "bug_reorder",
    "ready_send_before_persist": "bug_vote_crash",
}


@dataclass(frozen=True)
class BrokenCore:
    """A picklable core factory combining the named broken cores (sweeps fork workers)."""

    bugs: frozenset[str]
    _cls: list[type[RawNode]] = field(default_factory=list, compare=False, repr=False)

    def __call__(self, config: Config, storage: MemoryStorage, /) -> RawNode:
        if not self._cls:
            classes = [CORES[b] for b in sorted(self.bugs)]
            cls = classes[0] if len(classes) == 1 else type("Broken", tuple(classes), {})
            self._cls.append(cls)
        return self._cls[0](config, storage)

    def __getstate__(self) -> frozenset[str]:
        return self.bugs

    def __setstate__(self, bugs: frozenset[str]) -> None:
        object.__setattr__(self, "bugs", bugs)
        object.__setattr__(self, "_cls", [])


def core(bugs: Iterable[str]) -> type[RawNode] | BrokenCore:
    """A core factory with the named core bugs (``RawNode`` when there are none)."""
    names = frozenset(bugs)
    unknown = names - frozenset(CORES)
    if unknown:
        raise ValueError(f"unknown core bugs: {sorted(unknown)}")
    return BrokenCore(names) if names else RawNode


def variant(bugs: Iterable[str]) -> Variant:
    """The simulator's variant with the named bugs (core and plan bugs may be combined)."""
    names = frozenset(bugs)
    unknown = names - KNOWN_BUGS
    if unknown:
        raise ValueError(f"unknown bugs: {sorted(unknown)}")
    plans = [PLANS[b] for b in sorted(names & frozenset(PLANS))]
    if len(plans) > 1:
        raise ValueError("at most one broken Ready plan at a time")
    plan = plans[0] if plans else plan_ready
    return Variant(core(names - frozenset(PLANS)), plan, tuple(sorted(names)))


def run_seed(
    seed: int,
    profile: str | None = None,
    bugs: Iterable[str] = (),
    settings: tuple[str, ...] = (),
    commit_rule: bool = True,
) -> RunResult:
    """``confman.sim.runner.run_seed`` with the named bugs."""
    return _run_seed(seed, profile, variant(bugs), settings=settings, commit_rule=commit_rule)
