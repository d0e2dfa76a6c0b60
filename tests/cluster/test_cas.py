"""docs/behaviour.md §14, compare-and-set on a real cluster: of two writers racing with the same
If-Match exactly one wins, and read-modify-write increments from several clients, through a
leader failover, lose no update: the counter equals the number of successful writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from uuid import uuid4

import httpx

from confman.client import Client, PreconditionFailed
from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot, seed, wait_converged

NS = "cas"
PATH = f"api/v1/namespaces/{NS}/config/"


def endpoints(c: ProcessCluster) -> str:
    return ",".join(c.url(n).rstrip("/") for n in c.ids)


def cas_put(
    c: ProcessCluster, nid: str, version: int, barrier: threading.Barrier, out: list[int]
) -> None:
    """PUT ``race`` with If-Match ``version`` through ``nid`` (forwarded when it follows),
    retried with one idempotency key until the answer is definite (200 or 412)."""
    headers = {**c.auth("admin"), "If-Match": f'"{version}"', "Idempotency-Key": uuid4().hex}
    barrier.wait()
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < deadline:
            try:
                r = http.put(
                    c.url(nid) + PATH + "race?forward=true",
                    json={"value": f"{nid}@{version}"},
                    headers=headers,
                )
                if r.status_code in (200, 412):
                    out.append(r.status_code)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # no leader for the moment (an election under load): retry


def test_two_writers_with_the_same_if_match_never_both_succeed(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    leader = boot(c)
    seed(c, NS, {"race": "0"})
    follower = next(n for n in c.ids if n != leader)
    for version in range(1, 13):
        barrier = threading.Barrier(2)
        statuses: list[int] = []
        threads = [
            threading.Thread(target=cas_put, args=(c, nid, version, barrier, statuses))
            for nid in (leader, follower)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        assert sorted(statuses) == [200, 412], (version, statuses)
    r = c.request(leader, "GET", PATH + "race?consistency=linearizable", role="viewer")
    assert r.json()["version"] == 13


def test_read_modify_write_counter_loses_no_update_across_failover(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    old = boot(c)
    seed(c, NS, {"counter": "0"})
    wins: list[int] = []  # the version each successful write replaced
    conflicts = [0]
    errors: list[str] = []
    halt = threading.Event()

    def worker(forward: bool) -> None:
        with Client(endpoints(c), c.keys["admin"], retry_timeout=30, forward_writes=forward) as cl:
            while not halt.is_set():
                try:
                    e = cl.get(NS, "counter", consistency="linearizable")
                    cl.put(NS, "counter", str(int(e.value) + 1), if_match=e.version)
                    wins.append(e.version)
                except PreconditionFailed:
                    conflicts[0] += 1
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        c.wait_for(lambda: len(wins) >= 30, 30, 0.05, "30 increments")
        c.kill(old)
        c.wait_leader([n for n in c.ids if n != old], timeout=15)
        c.wait_for(lambda: len(wins) >= 60, 30, 0.05, "30 more increments")
        c.start(old)
    finally:
        halt.set()
        for t in threads:
            t.join(60)
    state = wait_converged(c)
    counter = next(e for e in state["configs"] if e["key"] == "counter")
    assert not errors, errors[:5]
    assert len(wins) == len(set(wins)), "two writers succeeded at the same version"
    assert int(counter["value"]) == len(wins) and counter["version"] == len(wins) + 1
    assert conflicts[0] > 0, "the writers never raced: the test proves nothing"
    print(f"{len(wins)} increments, {conflicts[0]} lost races (412), none lost")
