"""Throughput of the Raft core alone: a 3-node in-memory cluster on a perfect network.

Run: ``.venv/bin/python -m benchmarks.bench_raft [--rounds 3] [--entries 20000] [--cpu]``

No simulator, no faults, no I/O: proposals go to the leader in batches of 1 or 64
(``propose`` / ``propose_many``), every Ready is persisted into ``MemoryStorage``, its
messages are delivered at once, committed entries are "applied" (counted), and the loop
runs until the cluster is quiet before the next batch (so each batch costs a full
replication round trip). One ``tick()`` per node per batch keeps heartbeats going. The
table shows committed entries per second, the median of ``--rounds`` rounds; ``--cpu``
counts this process's CPU time instead of wall time (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import deque
from collections.abc import Callable

from confman.raft.config import Config
from confman.raft.node import RawNode
from confman.raft.storage import MemoryStorage
from confman.raft.types import ConfState, Message, Role

IDS = ("n1", "n2", "n3")
PAYLOAD = b"x" * 64


class MiniCluster:
    """Three cores wired directly together: every message is delivered immediately."""

    def __init__(self, seed: int) -> None:
        conf = ConfState(voters=IDS)
        self.storage = {i: MemoryStorage(conf) for i in IDS}
        self.nodes = {
            i: RawNode(Config(id=i, rng=random.Random(seed * 10 + k)), self.storage[i])
            for k, i in enumerate(IDS)
        }
        self.inbox: deque[Message] = deque()
        self.applied = dict.fromkeys(IDS, 0)
        for _ in range(1000):  # boot: tick until an election timeout elects someone
            self.tick()
            self.pump()
            if self.leader() is not None:
                break
        else:
            raise RuntimeError("no leader elected")

    def leader(self) -> RawNode | None:
        return next((n for n in self.nodes.values() if n.role == Role.LEADER), None)

    def pump(self) -> None:
        """Handle Readies and deliver messages until nothing is left to do."""
        nodes, inbox = self.nodes, self.inbox
        busy = True
        while busy:
            busy = False
            for nid, node in nodes.items():
                if node.has_ready():
                    busy = True
                    rd = node.ready()
                    st = self.storage[nid]
                    if rd.snapshot is not None:
                        st.apply_snapshot(rd.snapshot)
                    if rd.entries:
                        st.append(rd.entries)
                    if rd.hard_state is not None:
                        st.set_hard_state(rd.hard_state)
                    inbox.extend(rd.messages)
                    self.applied[nid] += len(rd.committed_entries)
                    node.advance(rd)
            while inbox:
                busy = True
                m = inbox.popleft()
                nodes[m.to].step(m)

    def tick(self) -> None:
        for node in self.nodes.values():
            node.tick()


def run_round(
    batch: int, entries: int, seed: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Committed entries per second for ``entries`` proposals in batches of ``batch``."""
    c = MiniCluster(seed)
    leader = c.leader()
    assert leader is not None
    start_applied = c.applied[leader.id]
    batches = max(1, entries // batch)
    data = [PAYLOAD] * batch
    start = clock()
    for _ in range(batches):
        if batch == 1:
            leader.propose(PAYLOAD)
        else:
            leader.propose_many(data)
        c.pump()
        c.tick()
        c.pump()
    elapsed = clock() - start
    done = c.applied[leader.id] - start_applied
    if done != batches * batch or leader.role != Role.LEADER:
        raise RuntimeError(f"only {done} of {batches * batch} entries committed")
    return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--entries", type=int, default=20_000, help="entries per round (batch 1)")
    ap.add_argument("--cpu", action="store_true", help="per CPU second, not per wall second")
    args = ap.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    rows = []
    for batch, entries in ((1, args.entries), (64, args.entries * 10)):
        rates = [run_round(batch, entries, seed, clock) for seed in range(args.rounds)]
        rows.append((batch, entries, statistics.median(rates), min(rates), max(rates)))
    per = "CPU second" if args.cpu else "second"
    print(
        f"Raft core, 3 nodes in memory, perfect network, median of {args.rounds} rounds "
        f"(committed per {per})"
    )
    print(f"{'batch':>6} {'entries':>9} {'committed/s':>13} {'min':>10} {'max':>10}")
    for batch, entries, med, lo, hi in rows:
        print(f"{batch:>6} {entries:>9} {med:>13,.0f} {lo:>10,.0f} {hi:>10,.0f}")


if __name__ == "__main__":
    main()
