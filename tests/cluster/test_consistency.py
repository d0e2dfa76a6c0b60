"""docs/behaviour.md §13, read consistency on a real cluster: a linearizable read (on a lagging
follower, or on an old leader cut off or paused) never returns a value older than a write
acknowledged before the read started, and a lease read is never served by a leader that could
have been deposed. Local reads may be stale; ``minIndex`` reads one's own writes on any node."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from confman.client import Client
from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot, seed

KEY = "api/v1/namespaces/lin/config/k"


@dataclass(frozen=True)
class Read:
    node: str
    level: str
    start: float
    end: float
    status: int  # 0: no answer
    version: int | None


def read(http: httpx.Client, c: ProcessCluster, nid: str, level: str, timeout: float = 3) -> Read:
    start = time.monotonic()
    try:
        r = http.get(
            c.url(nid) + KEY,
            params={"consistency": level},
            headers=c.auth("viewer"),
            timeout=timeout,
        )
        status = r.status_code
        version = r.json()["version"] if status == 200 else None
    except httpx.HTTPError:
        status, version = 0, None
    return Read(nid, level, start, time.monotonic(), status, version)


def writer(c: ProcessCluster, nodes: list[str]) -> Client:
    """A client writing through ``nodes``: retried across elections, applied once."""
    return Client(",".join(c.url(n).rstrip("/") for n in nodes), c.keys["admin"], retry_timeout=30)


def put(client: Client, value: str) -> tuple[float, int, int]:
    """Write ``value``; (acknowledged at, version, index)."""
    e = client.put("lin", "k", value)
    assert e.index is not None
    return time.monotonic(), e.version, e.index


class Readers:
    """Threads reading ``KEY`` from given nodes at given levels until stopped."""

    def __init__(self, c: ProcessCluster, targets: list[tuple[str, str]]) -> None:
        self.reads: list[Read] = []
        self._halt = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(c, nid, level), daemon=True)
            for nid, level in targets
        ]
        for t in self._threads:
            t.start()

    def _run(self, c: ProcessCluster, nid: str, level: str) -> None:
        with httpx.Client() as http:
            while not self._halt.is_set():
                self.reads.append(read(http, c, nid, level, timeout=1.5))

    def stop(self) -> list[Read]:
        self._halt.set()
        for t in self._threads:
            t.join(10)
        return self.reads


def stale(reads: list[Read], acks: list[tuple[float, int]]) -> list[tuple[Read, int]]:
    """Successful reads that returned less than a version acknowledged before they began."""
    out = []
    for r in reads:
        if r.status != 200 or r.version is None:
            continue
        floor = max((v for t, v in acks if t < r.start), default=0)
        if r.version < floor:
            out.append((r, floor))
    return out


def test_linearizable_reads_on_a_lagging_follower_are_never_stale(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    leader = boot(c)
    seed(c, "lin", {"k": "v0"})
    follower = next(n for n in c.ids if n != leader)
    c.set_link(leader, follower, "pass", latency_ms=120)  # the follower learns commits late
    readers = Readers(c, [(follower, "linearizable"), (leader, "linearizable")])
    acks: list[tuple[float, int]] = []
    local_stale = 0
    try:
        with httpx.Client() as http, writer(c, [leader]) as client:
            for i in range(25):
                at, version, index = put(client, f"v{i + 1}")
                acks.append((at, version))
                local = read(http, c, follower, "local")
                local_stale += local.status == 200 and (local.version or 0) < version
                mine = http.get(
                    c.url(follower) + KEY, params={"minIndex": index}, headers=c.auth("viewer")
                )
                assert mine.status_code == 200 and mine.json()["version"] >= version
    finally:
        reads = readers.stop()
    lin = [r for r in reads if r.status == 200]
    assert stale(reads, acks) == []
    assert len([r for r in lin if r.node == follower]) >= 10, "too few follower reads answered"
    assert local_stale >= 1, "the follower never lagged: the test proves nothing"
    print(
        f"{len(lin)} linearizable reads, none stale; {local_stale}/25 local reads on the "
        "lagging follower were stale"
    )


def test_isolated_old_leader_serves_no_stale_consistent_read(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    old = boot(c)
    seed(c, "lin", {"k": "v0"})
    others = [n for n in c.ids if n != old]
    readers = Readers(c, [(old, "linearizable"), (old, "lease"), (old, "lease")])
    try:
        c.wait_for(lambda: sum(r.status == 200 for r in readers.reads) >= 10, 10, 0.02, "reads")
        t_cut = time.monotonic()
        c.isolate(old)
        c.wait_leader(others, timeout=10)
        t_elected = time.monotonic()
        with writer(c, others) as client:
            acks = [put(client, "after the cut")[:2]]
        t_ack = time.monotonic()
        c.wait_for(  # the old leader keeps being asked after the write was acknowledged
            lambda: sum(r.start > t_ack for r in readers.reads) >= 3,  # one per reader
            15,
            0.05,
            "reads after the write",
        )
    finally:
        reads = readers.stop()
    assert stale(reads, acks) == []
    late_lease = [
        r for r in reads if r.level == "lease" and r.status == 200 and r.start > t_elected
    ]
    assert late_lease == [], "a lease read was served after a new leader was elected"
    served_after_cut = [r for r in reads if r.status == 200 and r.start > t_cut]
    refused = {r.status for r in reads if r.start > t_elected}
    assert refused <= {0, 307, 503, 504}, refused
    print(
        f"{len(reads)} reads of the old leader; {len(served_after_cut)} served in the "
        f"{t_elected - t_cut:.2f}s before a new leader was seen, none after"
    )
    c.heal()
    c.wait_ready(timeout=20)


def test_paused_leader_resumed_serves_no_stale_read(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    old = boot(c)
    seed(c, "lin", {"k": "v0"})
    others = [n for n in c.ids if n != old]
    c.pause(old)
    c.wait_leader(others, timeout=10)
    with writer(c, others) as client:
        acks = [put(client, "while it slept")[:2]]
    # Reads sent now wait in the old leader's accept queue: on SIGCONT they are the first
    # thing it handles, before it has heard of the new term.
    results: list[Read] = []

    def one(level: str) -> None:
        with httpx.Client() as http:
            results.append(read(http, c, old, level, timeout=8))

    threads = [
        threading.Thread(target=one, args=(level,), daemon=True)
        for level in ("lease", "linearizable", "lease", "linearizable")
    ]
    for t in threads:
        t.start()
    c.wait_for(lambda: time.monotonic() - acks[0][0] > 0.2, 2, 0.02, "requests to queue")
    c.resume(old)
    for t in threads:
        t.join(15)
    assert len(results) == len(threads)
    assert stale(results, acks) == [], results
    print("after SIGCONT:", sorted((r.level, r.status, r.version) for r in results))
