"""``confman.client`` against a live 3-node cluster: operations and typed errors, unreachable
endpoints, leader discovery and redirects, retries across a leader failover, read-your-writes,
and watches that resume after disconnects and a node failure."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from confman.client import (
    AsyncClient,
    BadRequest,
    Client,
    Entry,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    WatchEvent,
)
from confman.verify.cluster import ProcessCluster, free_ports
from tests.client.conftest import endpoints

pytestmark = pytest.mark.timeout(180)


def admin(c: ProcessCluster, urls: str | None = None, **kwargs: object) -> Client:
    return Client(urls or endpoints(c), c.keys["admin"], retry_timeout=20, **kwargs)  # type: ignore[arg-type]


def url(c: ProcessCluster, nid: str) -> str:
    return c.url(nid).rstrip("/")


def test_operations_and_typed_errors(healthy: ProcessCluster) -> None:
    c = healthy
    with admin(c) as client:
        ns = client.put_namespace("cl-ops", description="client tests", owner="qa")
        assert (ns.path, ns.description, ns.owner) == ("cl-ops", "client tests", "qa")
        first = client.put("cl-ops", "db.url", "postgres://a")
        assert first.version == 1 and first.index is not None
        got = client.get("cl-ops", "db.url", consistency="linearizable")
        assert got.value == "postgres://a" and got.index is not None and got.index >= first.index
        second = client.put("cl-ops", "db.url", "postgres://b", if_match=1, type="url")
        assert (second.version, second.type) == (2, "url")
        with pytest.raises(PreconditionFailed) as lost:
            client.put("cl-ops", "db.url", "postgres://c", if_match=1)
        assert lost.value.current_version == 2
        with pytest.raises(PreconditionFailed):
            client.put("cl-ops", "db.url", "x", create_only=True)
        with pytest.raises(PreconditionFailed):
            client.put("cl-ops", "absent", "x", if_match="*")
        assert client.put("cl-ops", "db.url", "postgres://d", if_match="*").version == 3
        assert [e.key for e in client.entries("cl-ops")] == ["db.url"]
        assert any(e.namespace == "cl-ops" for e in client.entries())
        assert "cl-ops" in [n.path for n in client.namespaces()]
        assert [a.action for a in client.audit("cl-ops")][:2] == [
            "config.updated",
            "config.updated",
        ]
        key = str(uuid.uuid4())
        client.put("cl-ops", "once", "1", idempotency_key=key)
        again = client.put("cl-ops", "once", "1", idempotency_key=key)
        assert again.version == 1
        with pytest.raises(IdempotencyKeyReused):
            client.put("cl-ops", "once", "2", idempotency_key=key)
        with pytest.raises(BadRequest) as bad:
            client.get("cl-ops", "bad name")
        assert bad.value.field == "key"
        assert client.delete("cl-ops", "db.url", if_match=3) > 0
        with pytest.raises(NotFound):
            client.get("cl-ops", "db.url")
        with pytest.raises(NotFound):
            client.delete("cl-ops", "db.url")
        client.delete_namespace("cl-ops")
        with pytest.raises(NotFound):
            client.namespace("cl-ops")
    with Client(endpoints(c), c.keys["viewer"]) as viewer, pytest.raises(Forbidden):
        viewer.put("anything", "k", "v")
    with Client(endpoints(c), "wrong-key") as stranger, pytest.raises(Unauthorized):
        stranger.namespaces()


def test_unreachable_endpoints_are_skipped(healthy: ProcessCluster) -> None:
    c = healthy
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    with admin(c, f"{dead},{endpoints(c)}") as client:
        client.put_namespace("cl-dead")
        assert client.put("cl-dead", "k", "v").version == 1
        assert client.get("cl-dead", "k").value == "v"
    statuses = Client(f"{dead},{endpoints(c)}").cluster_status()
    assert [s.reachable for s in statuses] == [False, True, True, True]
    assert sum(s.role == "leader" for s in statuses) == 1


def test_leader_discovery_redirects_and_forwarding(healthy: ProcessCluster) -> None:
    c = healthy
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    with admin(c) as client:
        assert client.leader() == url(c, leader)
        client.put_namespace("cl-lead")
    with admin(c, f"{url(c, follower)},{url(c, leader)}") as via_follower:
        via_follower._core.endpoints.leader = url(c, follower)  # stale: the follower 307s
        e = via_follower.put("cl-lead", "k", "via 307")
        assert e.version == 1 and via_follower._core.endpoints.leader == url(c, leader)
        lease = via_follower.get("cl-lead", "k", consistency="lease")  # a follower redirects
        assert lease.value == "via 307"
    with admin(c, url(c, follower), forward_writes=True) as forwarding:
        forwarding._core.endpoints.leader = url(c, follower)  # pretend it leads: 307 or proxy
        assert forwarding.put("cl-lead", "k", "forwarded").version == 2


def test_a_client_of_one_follower_follows_the_members_it_advertises(
    healthy: ProcessCluster,
) -> None:
    c = healthy
    follower = next(n for n in c.ids if n != c.wait_leader())
    with admin(c) as client:
        client.put_namespace("cl-one")
    with admin(c, url(c, follower)) as only_follower:
        assert only_follower.put("cl-one", "k", "via the leader").version == 1


def test_min_index_reads_own_writes_on_every_node(healthy: ProcessCluster) -> None:
    c = healthy
    with admin(c) as client:
        client.put_namespace("cl-ryw")
        written = client.put("cl-ryw", "k", "fresh")
    for nid in c.ids:
        with Client(url(c, nid), c.keys["viewer"]) as one:
            got = one.get("cl-ryw", "k", min_index=written.index)
            assert got.value == "fresh" and got.index is not None and got.index >= written.index


def test_write_retried_across_a_leader_failover_is_applied_once(
    healthy: ProcessCluster,
) -> None:
    c = healthy
    with admin(c) as client:
        client.put_namespace("cl-failover")
        old = c.wait_leader()
        assert client.leader() == url(c, old)
        c.kill(old)  # the client still believes in it
        t0 = time.monotonic()
        e = client.put("cl-failover", "k", "after failover")
        elapsed = time.monotonic() - t0
        assert e.version == 1
        assert client.leader() != url(c, old)
        events = client.audit("cl-failover", consistency="linearizable")
    assert [(a.action, a.key) for a in events] == [
        ("config.created", "k"),
        ("namespace.created", None),
    ]
    print(f"write acknowledged {elapsed:.2f}s after the leader was killed")


def collect(watch: object, into: list[WatchEvent], done: threading.Event) -> threading.Thread:
    def run() -> None:
        for ev in watch:  # type: ignore[attr-defined]
            into.append(ev)
            if done.is_set():
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_watch_resumes_after_disconnects_and_a_node_failure(healthy: ProcessCluster) -> None:
    c = healthy
    with admin(c) as client, admin(c) as watcher:
        client.put_namespace("cl-watch")
        since = client.poll("cl-watch").index  # from now: after the namespace's creation
        got: list[WatchEvent] = []
        done = threading.Event()
        w = watcher.watch("cl-watch", since=since, heartbeat=1)
        t = collect(w, got, done)
        for i in range(10):
            client.put("cl-watch", f"k{i % 3}", f"a{i}")
        c.wait_for(lambda: len(got) >= 10, 20, 0.05, "the first 10 events")
        w.disconnect()
        for i in range(10):
            client.put("cl-watch", f"k{i % 3}", f"b{i}")
        c.wait_for(lambda: len(got) >= 20, 20, 0.05, "20 events")
        c.kill(c.node_of_url(w.endpoint + "/") or "")  # the node the watch reads from
        for i in range(10):
            client.put("cl-watch", f"k{i % 3}", f"c{i}")
        client.delete_namespace("cl-watch")  # four events under one index
        c.wait_for(lambda: len(got) >= 34, 30, 0.05, "34 events")
        audit = client.audit("cl-watch", limit=1000, consistency="linearizable")
        done.set()
        w.close()
        t.join(5)
    expected = [(a.action, a.key, a.new_value) for a in reversed(audit)][1:]  # after creation
    assert [(e.type, e.key, e.value) for e in got] == expected
    assert [e.index for e in got] == sorted(e.index for e in got)
    assert w.connects >= 3


def test_async_client(healthy: ProcessCluster) -> None:
    c = healthy

    async def main() -> tuple[Entry, list[WatchEvent]]:
        async with AsyncClient(endpoints(c), c.keys["admin"], retry_timeout=20) as client:
            await client.put_namespace("cl-async")
            first = await client.put("cl-async", "k", "1")
            with pytest.raises(PreconditionFailed):
                await client.put("cl-async", "k", "x", if_match=5)
            assert (await client.get("cl-async", "k", consistency="linearizable")).value == "1"
            page = await client.poll("cl-async", since=0)
            assert [e.index for e in page.events][-1] == first.index
            events: list[WatchEvent] = []
            async with client.watch("cl-async", since=first.index, heartbeat=1) as w:
                await client.put("cl-async", "k", "2")
                await w.disconnect()
                await client.put("cl-async", "k", "3")
                async for ev in w:
                    events.append(ev)
                    if len(events) == 2:
                        break
            return first, events

    first, events = asyncio.run(asyncio.wait_for(main(), 60))
    assert [(e.value, e.version) for e in events] == [("2", 2), ("3", 3)]
    assert all(e.index > (first.index or 0) for e in events)
