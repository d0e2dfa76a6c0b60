"""A small synchronous in-memory cluster for unit tests of the Raft core.

Unlike the simulator (confman/sim), it is fully manual: tests decide which messages are
delivered, dropped or intercepted, so each rule of the paper can be checked in isolation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from confman.raft.bootstrap import bootstrap_entries
from confman.raft.confchange import decode_conf_change
from confman.raft.config import Config
from confman.raft.node import RawNode
from confman.raft.storage import MemoryStorage
from confman.raft.types import ConfState, Entry, EntryType, Message, ReadState, Role
from tests.raft import broken


class Cluster:
    """Nodes over MemoryStorage; ``deliver()`` runs Ready loops until quiet."""

    def __init__(
        self,
        ids: Iterable[str] = ("n1", "n2", "n3"),
        seed: int = 1,
        learners: Iterable[str] = (),
        log_bootstrap: bool = False,
        bugs: frozenset[str] = frozenset(),
        **cfg: object,
    ) -> None:
        """``log_bootstrap`` writes the founding membership as log entries (as the runtime
        does, so members added later learn it); otherwise storage starts with a ConfState.
        ``bugs`` runs deliberately broken cores (``tests/raft/broken.py``)."""
        self.ids = list(ids)
        self.core = broken.core(bugs)
        self.cfg = cfg
        self.seed = seed
        learners = list(learners)
        entries, hs = bootstrap_entries(self.ids, learners)
        conf = ConfState(tuple(self.ids), tuple(learners))
        self.storage: dict[str, MemoryStorage] = {}
        self.nodes: dict[str, RawNode] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.queue: list[Message] = []
        self.dropped: set[tuple[str, str]] = set()  # (from, to) links that lose messages
        self.filter: Callable[[Message], bool] | None = None  # return False to drop
        for i in [*self.ids, *learners]:
            if log_bootstrap:
                st = MemoryStorage()
                st.append(entries)
                st.set_hard_state(hs)
            else:
                st = MemoryStorage(conf)
            self.storage[i] = st
            self.start(i)
            self.process(i)  # apply the bootstrap membership

    def config(self, nid: str, applied: int = 0) -> Config:
        return Config(id=nid, rng=random.Random(f"{self.seed}-{nid}"), applied=applied, **self.cfg)  # type: ignore[arg-type]

    def start(self, nid: str) -> RawNode:
        """(Re)start a node over its storage; its volatile state machine is replayed."""
        st = self.storage[nid]
        applied = st.snapshot().meta.index
        node = self.core(self.config(nid, applied), st)
        self.nodes[nid] = node
        self.applied[nid] = []
        self.read_states[nid] = []
        self.process(nid)
        return node

    def add_node(self, nid: str) -> RawNode:
        """A brand-new empty member (to be added by a conf change)."""
        self.storage[nid] = MemoryStorage()
        return self.start(nid)

    # -- driving -----------------------------------------------------------------------
    def process(self, nid: str) -> None:
        node = self.nodes[nid]
        while node.has_ready():
            rd = node.ready()
            st = self.storage[nid]
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                self.applied[nid] = [Entry(rd.snapshot.meta.term, rd.snapshot.meta.index)]
            st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            self.queue.extend(rd.messages)
            for e in rd.committed_entries:
                self.applied[nid].append(e)
                if e.type == EntryType.CONF_CHANGE:
                    node.apply_conf_change(decode_conf_change(e.data))
            self.read_states[nid].extend(rd.read_states)
            node.advance(rd)

    def deliver(self, max_rounds: int = 1000) -> None:
        """Process every node and deliver messages until nothing is left."""
        for _ in range(max_rounds):
            for nid in list(self.nodes):
                self.process(nid)
            if not self.queue:
                return
            msgs, self.queue = self.queue, []
            for m in msgs:
                if (m.frm, m.to) in self.dropped or m.to not in self.nodes:
                    continue
                if self.filter is not None and not self.filter(m):
                    continue
                self.nodes[m.to].step(m)
        raise AssertionError("cluster did not quiesce")

    def take_messages(self) -> list[Message]:
        """Run Ready loops and return (without delivering) the queued messages."""
        for nid in list(self.nodes):
            self.process(nid)
        msgs, self.queue = self.queue, []
        return msgs

    def tick(self, n: int = 1, nodes: Iterable[str] | None = None) -> None:
        ids = list(nodes) if nodes is not None else list(self.nodes)
        for _ in range(n):
            for nid in ids:
                self.nodes[nid].tick()
            self.deliver()

    def elect(self, nid: str) -> RawNode:
        """Make ``nid`` leader now (other nodes' leases are expired first)."""
        self.expire_leases(*[o for o in self.nodes if o != nid])
        self.nodes[nid].campaign()
        self.deliver()
        assert self.nodes[nid].role == Role.LEADER, self.nodes[nid].status()
        return self.nodes[nid]

    def leader(self) -> RawNode | None:
        leaders = [n for n in self.nodes.values() if n.role == Role.LEADER]
        return max(leaders, key=lambda n: n.term) if leaders else None

    def expire_leases(self, *ids: str) -> None:
        """Act as if these nodes heard from no leader for an election timeout."""
        for nid in ids or list(self.nodes):
            node = self.nodes[nid]
            node.leader_contact_elapsed = node.cfg.election_tick_min

    def isolate(self, nid: str) -> None:
        for o in self.ids:
            if o != nid:
                self.dropped.add((nid, o))
                self.dropped.add((o, nid))

    def heal(self) -> None:
        self.dropped.clear()

    def crash(self, nid: str) -> None:
        """Lose the node's volatile state; its storage (what it persisted) survives."""
        del self.nodes[nid]

    def data(self, nid: str) -> list[bytes]:
        """Payloads of the normal entries ``nid`` applied (no-ops and conf changes left out)."""
        return [e.data for e in self.applied[nid] if e.data and e.type == EntryType.NORMAL]
