"""docs/behaviour.md §16, watches on a real cluster: over a run with writes, a leader failover
and forced client disconnects, what an SSE watcher and a long-polling watcher receive equals the
committed changes (the audit log) in order, with no loss and no duplicate."""

from __future__ import annotations

import threading
from collections.abc import Callable

from confman.client import Client, WatchEvent
from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot

NS = "watched"


def endpoints(c: ProcessCluster) -> str:
    return ",".join(c.url(n).rstrip("/") for n in c.ids)


class Writes(threading.Thread):
    """Puts (and now and then deletes) keys through the client until stopped."""

    def __init__(self, c: ProcessCluster) -> None:
        super().__init__(daemon=True)
        self.client = Client(endpoints(c), c.keys["admin"], retry_timeout=30)
        self.done = 0
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            key = f"k{i % 7}"
            try:
                if i % 11 == 10:
                    self.client.delete(NS, key)
                else:
                    self.client.put(NS, key, f"v{i}")
                self.done += 1
            except Exception as exc:  # a delete of a missing key, a failover beyond budget
                self.errors.append(f"{type(exc).__name__}: {exc}")
            i += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        self.client.close()


class Poller(threading.Thread):
    """A long-polling watcher: ``poll(since, wait)`` in a loop, resuming from ``index``."""

    def __init__(self, c: ProcessCluster, since: int) -> None:
        super().__init__(daemon=True)
        self.client = Client(endpoints(c), c.keys["viewer"], retry_timeout=30)
        self.since = since
        self.events: list[WatchEvent] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            page = self.client.poll(NS, since=self.since, wait=1)
            self.events += page.events
            self.since = page.index

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.client.close()


def test_watchers_see_every_committed_change_once_across_failover_and_disconnects(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    old = boot(c)
    with Client(endpoints(c), c.keys["admin"]) as admin:
        admin.put_namespace(NS)
        since = admin.poll(NS).index  # after the namespace's creation
    got: list[WatchEvent] = []
    watcher = Client(endpoints(c), c.keys["viewer"]).watch(NS, since=since, heartbeat=1)

    def consume() -> None:
        for ev in watcher:
            got.append(ev)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    poller = Poller(c, since)
    poller.start()
    writes = Writes(c)
    writes.start()
    try:
        for round_ in range(1, 4):  # forced disconnects while writes flow
            c.wait_for(lambda r=round_: len(got) >= 15 * r, 20, 0.02, "more events")
            watcher.disconnect()
        done_before = writes.done
        c.kill(old)
        new = c.wait_leader([n for n in c.ids if n != old], timeout=15)
        c.wait_for(lambda: writes.done >= done_before + 20, 30, 0.05, "writes after failover")
        watcher.disconnect()
        c.start(old)
        c.wait_ready(timeout=20)
        c.kill(c.node_of_url(watcher.endpoint + "/") or new)  # the node it reads from
        c.wait_leader(timeout=15)
        c.wait_for(lambda: writes.done >= done_before + 40, 30, 0.05, "writes after that")
    finally:
        writes.stop()
    with Client(endpoints(c), c.keys["admin"], retry_timeout=30) as admin:
        admin.delete_namespace(NS)  # a last index with several events
        audit = admin.audit(NS, limit=1000, consistency="linearizable")
    expected = [(a.action, a.key, a.new_value) for a in reversed(audit)][1:]  # after creation
    try:
        c.wait_for(lambda: len(got) >= len(expected), 30, 0.05, "the watcher to catch up")
        c.wait_for(lambda: len(poller.events) >= len(expected), 30, 0.05, "the poller")
    finally:
        watcher.close()
        poller.stop()
    for name, events in (("SSE watcher", got), ("long poller", poller.events)):
        seen = [(e.type, e.key, e.value) for e in events]
        assert seen == expected, f"{name}: events differ from the audit log"
        indexes = [e.index for e in events]
        assert indexes == sorted(indexes), f"{name}: out of log order"
    assert len(expected) > 80 and watcher.connects >= 5
    print(
        f"{len(expected)} changes, {writes.done} writes acknowledged, watcher connected "
        f"{watcher.connects} times; write errors: {writes.errors[:3]}"
    )
