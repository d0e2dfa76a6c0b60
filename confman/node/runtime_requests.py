"""Proposals and reads: writes queued for the Ready loop, proposed to the core in batches and
matched to their applied results (`Proposals`); ReadIndex requests batched into one round
per pass of the loop and answered by the core's read states (`Reads`); and the callers
waiting until an index is applied here (`AppliedWaiters`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confman.node.errors import NoLeader, ProposalDropped, ReadTimeout, ReplicationTimeout
from confman.node.metrics import NodeMetrics
from confman.node.runtime_common import Control, set_exc, set_result, wait
from confman.node.state.machine import ApplyResult
from confman.raft.node import RawNode
from confman.raft.types import Entry, NotLeaderError, ProposalDroppedError, ReadState, Role


@dataclass(slots=True)
class Proposal:
    data: bytes
    future: asyncio.Future[ApplyResult]
    started: float


class Proposals:
    """Writes waiting for the Ready loop to propose them, then for their entry's result.

    ``not_leader`` builds the error for a node that does not lead (NotLeader or NoLeader).
    """

    def __init__(
        self,
        core: RawNode,
        metrics: NodeMetrics,
        ctl: Control,
        not_leader: Callable[[], Exception],
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._ctl = ctl
        self._not_leader = not_leader
        self._pending: list[Proposal] = []
        self._waiting: dict[int, tuple[int, Proposal]] = {}  # index -> (term, proposal)

    def has_pending(self) -> bool:
        return bool(self._pending)

    async def submit(self, data: bytes, timeout: float) -> ApplyResult:
        """Queue ``data``; its applied result, or ReplicationTimeout after ``timeout`` s."""
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._pending.append(Proposal(data, fut, time.perf_counter()))
        self._ctl.wake()
        try:
            return await wait(fut, timeout)
        except TimeoutError:
            self._metrics.proposal_failures.labels(reason="timeout").inc()
            raise ReplicationTimeout(
                f"commitment not confirmed within {timeout:g}s; the write may still be applied"
            ) from None

    def flush(self) -> None:
        """Propose everything queued as one batch (Ready loop)."""
        batch, self._pending = self._pending, []
        if self._core.role != Role.LEADER:
            exc = self._not_leader()
            for p in batch:
                set_exc(p.future, exc)
            return
        try:
            first = self._core.propose_many([p.data for p in batch])
        except (NotLeaderError, ProposalDroppedError) as e:
            for p in batch:
                set_exc(p.future, ProposalDropped(str(e)))
            return
        term = self._core.term
        for i, p in enumerate(batch):
            self._waiting[first + i] = (term, p)
        self._metrics.proposals.inc(len(batch))
        self._metrics.batch_size.observe(len(batch))

    def settle(self, entries: Iterable[Entry], results: Iterable[ApplyResult]) -> None:
        """Answer the proposals of applied ``entries`` (dropped if another term's entry
        took their index)."""
        now = time.perf_counter()
        for e, res in zip(entries, results, strict=True):
            waiting = self._waiting.pop(e.index, None)
            if waiting is None:
                continue
            term, p = waiting
            if term == e.term:
                self._metrics.commit_latency.observe(now - p.started)
                set_result(p.future, res)
            else:
                self._metrics.proposal_failures.labels(reason="dropped").inc()
                set_exc(p.future, ProposalDropped("the entry was replaced by a new leader"))

    def replaced_through(self, index: int) -> None:
        """A snapshot replaced the state through ``index``: our own proposals below it may
        or may not have been committed."""
        for idx in [i for i in self._waiting if i <= index]:
            set_exc(
                self._waiting.pop(idx)[1].future,
                ReplicationTimeout("outcome unknown: state replaced by a snapshot"),
            )

    def fail_all(self, exc: Exception) -> None:
        for p in self._pending:
            set_exc(p.future, exc)
        self._pending.clear()
        for _, p in self._waiting.values():
            set_exc(p.future, exc)
        self._waiting.clear()


class Reads:
    """ReadIndex requests: queued, sent as one round per pass of the Ready loop (``flush``),
    answered when the core confirms its leadership for that round (``serve``)."""

    def __init__(self, node_id: str, core: RawNode, ctl: Control) -> None:
        self._id = node_id
        self._core = core
        self._ctl = ctl
        self._queued: list[asyncio.Future[int]] = []
        self._waiters: dict[bytes, list[asyncio.Future[int]]] = {}
        self._ctx = itertools.count(1)

    def has_queued(self) -> bool:
        return bool(self._queued)

    async def barrier(self, timeout: float) -> int:
        """The read index the leader confirms, or ReadTimeout after ``timeout`` s."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queued.append(fut)
        self._ctl.wake()
        try:
            return await wait(fut, timeout)
        except TimeoutError:
            fut.cancel()
            self._forget(fut)
            raise ReadTimeout("leadership could not be confirmed in time") from None

    def _forget(self, fut: asyncio.Future[int]) -> None:
        if fut in self._queued:
            self._queued.remove(fut)
        for ctx, futs in list(self._waiters.items()):
            if fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._waiters[ctx]

    def take_queued(self) -> list[asyncio.Future[int]]:
        """The queued requests, removed from the queue."""
        reads, self._queued = self._queued, []
        return reads

    def flush(self) -> None:
        """Start one ReadIndex round for every queued request (Ready loop)."""
        reads = self.take_queued()
        ctx = f"{self._id}:{next(self._ctx)}".encode()
        try:
            self._core.read_index(ctx)
        except NotLeaderError:
            for f in reads:
                set_exc(f, NoLeader("no leader is known"))
            return
        self._waiters[ctx] = reads

    def serve(self, read_states: Iterable[ReadState]) -> None:
        """Answer the rounds the core confirmed."""
        for rs in read_states:
            for f in self._waiters.pop(rs.context, []):
                set_result(f, rs.index)

    def leadership_lost(self) -> None:
        """Reads waiting on a leadership confirmation will never get it now."""
        self._fail_waiting(NoLeader("leadership lost"))

    def _fail_waiting(self, exc: Exception) -> None:
        for fs in self._waiters.values():
            for f in fs:
                set_exc(f, exc)
        self._waiters.clear()

    def fail_all(self, exc: Exception) -> None:
        for f in self._queued:
            set_exc(f, exc)
        self._queued.clear()
        self._fail_waiting(exc)


class AppliedWaiters:
    """Callers waiting until an index is applied here, earliest index first."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    async def wait(self, index: int, timeout: float) -> None:
        """Until ``wake`` reaches ``index``; ReadTimeout after ``timeout`` s."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (index, next(self._seq), fut))
        try:
            await wait(fut, timeout)
        except TimeoutError:
            fut.cancel()
            self._heap = [w for w in self._heap if w[2] is not fut]
            heapq.heapify(self._heap)
            raise ReadTimeout(f"index {index} not applied within {timeout:g}s") from None

    def wake(self, applied_index: int) -> None:
        while self._heap and self._heap[0][0] <= applied_index:
            set_result(heapq.heappop(self._heap)[2], None)

    def fail_all(self, exc: Exception) -> None:
        for _, _, f in self._heap:
            set_exc(f, exc)
        self._heap.clear()
