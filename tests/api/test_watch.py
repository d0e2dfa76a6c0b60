"""``GET /api/v1/watch`` on a live node: long polls, Server-Sent Events, filters, grants,
resumption, history compaction (410) and shutdown with open streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from confman.api.watch import encode_changes
from tests.api.harness import LiveNode, headers, wait_for
from tests.api.spec import CheckedClient

NS = "wt"
ADMIN = headers("admin")
VIEWER = headers("viewer")
SSE = {**VIEWER, "Accept": "text/event-stream"}


@pytest.fixture(scope="module", autouse=True)
def namespaces(api: CheckedClient) -> None:
    for ns in (NS, "wt-other"):
        assert api.put(f"/api/v1/namespaces/{ns}", headers=ADMIN).status_code in (200, 201)


def put(api: CheckedClient, key: str, value: str, ns: str = NS) -> int:
    r = api.put(f"/api/v1/namespaces/{ns}/config/{key}", json={"value": value}, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    return int(r.headers["X-Confman-Index"])


def poll(api: CheckedClient, **params: Any) -> dict[str, Any]:
    r = api.get("/api/v1/watch", params=params, headers=VIEWER)
    assert r.status_code == 200, r.text
    return r.json()


class Stream:
    """An SSE connection read on a thread: (event, id, data) tuples as they come."""

    def __init__(self, url: str, params: dict[str, str], hdrs: dict[str, str]) -> None:
        self.events: list[tuple[str, str | None, Any]] = []
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.ended = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(30, connect=5))
        self._cm = self._client.stream("GET", url + "/api/v1/watch", params=params, headers=hdrs)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._cm as r:
                self.status, self.headers = r.status_code, r.headers
                event, eid, data = "message", None, None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("id: "):
                        eid = line[4:]
                    elif line.startswith("data: "):
                        data = orjson.loads(line[6:])
                    elif not line and data is not None:
                        self.events.append((event, eid, data))
                        event, eid, data = "message", None, None
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def changes(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [(eid, d) for ev, eid, d in self.events if ev == "message"]

    def wait(self, what: str, predicate: Any, timeout: float = 10) -> None:
        wait_for(predicate, timeout, what)

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)


@pytest.fixture
def streams() -> Iterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for s in opened:
        s.close()


# -- long poll -----------------------------------------------------------------------------


def test_long_poll_lists_changes_after_since_and_the_index_to_resume_from(
    api: CheckedClient,
) -> None:
    first = put(api, "a", "1")
    second = put(api, "a", "2")
    body = poll(api, namespace=NS, key="a", since=first - 1)
    assert [(e["index"], e["value"], e["version"]) for e in body["events"]] == [
        (first, "1", 1),
        (second, "2", 2),
    ]
    assert body["events"][0] == {
        "type": "config.created",
        "namespace": NS,
        "key": "a",
        "value": "1",
        "version": 1,
        "index": first,
    }
    assert body["index"] >= second
    assert poll(api, namespace=NS, key="a", since=body["index"])["events"] == []


def test_long_poll_returns_as_soon_as_a_change_is_applied(
    api: CheckedClient, node: LiveNode
) -> None:
    since = poll(api, namespace=NS, key="b")["index"]  # from now
    result: dict[str, Any] = {}

    def waiter() -> None:
        with httpx.Client(base_url=node.url, timeout=30) as c:
            t0 = time.monotonic()
            params = {"namespace": NS, "key": "b", "since": since, "wait": "20s"}
            result["r"] = c.get("/api/v1/watch", params=params, headers=VIEWER)
            result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=waiter)
    t.start()
    put(api, "unrelated", "x")  # another key: not an answer yet
    index = put(api, "b", "now")
    t.join(20)
    body = result["r"].json()
    assert [e["index"] for e in body["events"]] == [index]
    assert result["elapsed"] < 10


def test_long_poll_times_out_empty_at_the_applied_index(api: CheckedClient) -> None:
    t0 = time.monotonic()
    body = poll(api, namespace="wt-other", key="never", wait="300ms")
    assert time.monotonic() - t0 >= 0.3
    assert body["events"] == []
    assert body["index"] >= 1


def test_watch_without_namespace_shows_only_granted_namespaces(api: CheckedClient) -> None:
    since = poll(api)["index"]
    put(api, "s", "mine", ns="wt-other")
    api.put("/api/v1/namespaces/other", headers=ADMIN)
    other = put(api, "s", "theirs", ns="other")
    r = api.get("/api/v1/watch", params={"since": since}, headers=headers("scoped"))
    events = r.json()["events"]
    assert {e["namespace"] for e in events} == {"other"} and events[-1]["index"] == other
    assert len(poll(api, since=since)["events"]) >= 2  # a key for every namespace sees both


def test_prefix_filter(api: CheckedClient) -> None:
    since = poll(api)["index"]
    put(api, "db.url", "u")
    put(api, "db.pool", "5")
    put(api, "cache", "on")
    keys = [e["key"] for e in poll(api, namespace=NS, prefix="db.", since=since)["events"]]
    assert keys == ["db.url", "db.pool"]


@pytest.mark.parametrize(
    ("params", "hdrs", "status", "field"),
    [
        ({"key": "a"}, {}, 400, "namespace"),
        ({"prefix": "a"}, {}, 400, "namespace"),
        ({"namespace": NS, "key": "a", "prefix": "a"}, {}, 400, "prefix"),
        ({"namespace": "bad name"}, {}, 400, "namespace"),
        ({"namespace": NS, "key": "a/b"}, {}, 400, "key"),
        ({"namespace": NS, "prefix": "a b"}, {}, 400, "prefix"),
        ({"since": "-1"}, {}, 400, "since"),
        ({"since": "x"}, {}, 400, "since"),
        ({"wait": "forever"}, {}, 400, "wait"),
        ({"wait": "11m"}, {}, 400, "wait"),
        ({"heartbeat": "10ms"}, {}, 400, "heartbeat"),
        ({}, {"Last-Event-ID": "abc"}, 400, "Last-Event-ID"),
        ({"namespace": NS}, {"X-Api-Key": headers("scoped")["X-Api-Key"]}, 403, None),
        ({}, {"X-Api-Key": ""}, 401, None),
    ],
)
def test_bad_watch_requests(
    api: CheckedClient, params: dict[str, str], hdrs: dict[str, str], status: int, field: str | None
) -> None:
    r = api.get("/api/v1/watch", params=params, headers={**VIEWER, **hdrs})
    assert r.status_code == status, r.text
    assert r.json().get("field") == field


# -- Server-Sent Events --------------------------------------------------------------------


def test_sse_streams_changes_with_ids_on_the_last_event_of_each_index(
    api: CheckedClient, node: LiveNode, streams: list[Stream]
) -> None:
    api.put("/api/v1/namespaces/wt-sse", headers=ADMIN)
    since = poll(api, namespace="wt-sse")["index"]
    s = Stream(node.url, {"namespace": "wt-sse", "heartbeat": "1s"}, SSE)
    streams.append(s)
    s.wait("the opening progress event", lambda: s.events)
    assert s.status == 200 and s.headers is not None
    assert s.headers["Content-Type"].startswith("text/event-stream")
    assert "X-Confman-Index" in s.headers and "X-Correlation-Id" in s.headers
    event, eid, data = s.events[0]
    assert event == "progress" and eid is not None and data == {"index": int(eid)}
    assert int(eid) >= since
    a = put(api, "a", "1", ns="wt-sse")
    put(api, "b", "2", ns="wt-sse")
    r = api.delete("/api/v1/namespaces/wt-sse", headers=ADMIN)
    gone = int(r.headers["X-Confman-Index"])
    s.wait("four changes", lambda: len(s.changes()) >= 5)
    got = s.changes()
    assert [(eid, d["type"], d["key"]) for eid, d in got] == [
        (str(a), "config.created", "a"),
        (str(a + 1), "config.created", "b"),
        (None, "config.deleted", "a"),
        (None, "config.deleted", "b"),
        (str(gone), "namespace.deleted", None),
    ]
    # a quiet stream repeats progress with the index watched through
    s.wait("a heartbeat", lambda: s.events[-1][0] == "progress", timeout=5)
    assert int(s.events[-1][1] or 0) >= gone


def test_sse_resumes_after_last_event_id(
    api: CheckedClient, node: LiveNode, streams: list[Stream]
) -> None:
    first = put(api, "r", "1")
    second = put(api, "r", "2")
    s = Stream(
        node.url,
        {"namespace": NS, "key": "r", "since": "0"},
        {**SSE, "Last-Event-ID": str(first)},  # wins over since
    )
    streams.append(s)
    s.wait("the change after the resumed id", lambda: s.changes())
    assert [d["index"] for _, d in s.changes()] == [second]


def test_sse_from_before_compacted_history_is_410(tmp_path: Path) -> None:
    live = LiveNode(tmp_path, history_retention_entries=3, history_compact_interval_ms=50)
    try:
        c = live.client
        c.put("/api/v1/namespaces/h", headers=ADMIN)
        for i in range(12):
            c.put("/api/v1/namespaces/h/config/k", json={"value": str(i)}, headers=ADMIN)

        def compacted() -> bool:
            r = c.get("/api/v1/watch", params={"since": 0}, headers=VIEWER)
            return r.status_code == 410

        wait_for(compacted, 10, "the leader to compact the history")
        for hdrs in (VIEWER, SSE):
            r = c.get("/api/v1/watch", params={"since": 1}, headers=hdrs)
            assert r.status_code == 410
            body = r.json()
            assert (
                body["title"] == "History compacted" and "list the current state" in body["detail"]
            )
            floor = int(r.headers["X-Confman-Compacted-Index"])
            assert floor >= 1
        ok = c.get("/api/v1/watch", params={"since": floor}, headers=VIEWER)
        assert ok.status_code == 200
        # the audit log is the same history: only the retained part is listed
        assert len(c.get("/api/v1/namespaces/h/audit", headers=VIEWER).json()) < 13
    finally:
        live.close()


def test_shutdown_ends_open_streams_at_once(tmp_path: Path) -> None:
    live = LiveNode(tmp_path)
    s = Stream(live.url, {"heartbeat": "60s"}, SSE)
    try:
        wait_for(lambda: bool(s.events), 10, "the stream to open")
        t0 = time.monotonic()
        live.close()
        assert time.monotonic() - t0 < 5
        assert s.ended.wait(5)
    finally:
        s.close()


def test_encode_changes_puts_ids_on_group_ends() -> None:
    changes = [
        {"index": 4, "type": "config.deleted"},
        {"index": 4, "type": "namespace.deleted"},
        {"index": 6, "type": "config.created"},
    ]
    text = encode_changes(changes).decode()
    blocks = text.strip().split("\n\n")
    assert ["id: " in b for b in blocks] == [False, True, True]
    assert blocks[1].startswith("id: 4\n") and blocks[2].startswith("id: 6\n")


# -- limits: subscribers per node and per target, page bytes (issue 14) --------------------

LIMITED = {"watch_max_subscribers": 3, "watch_max_per_key": 2, "watch_page_bytes": 4096}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("watch-limits"), **LIMITED)
    try:
        assert live.client.put("/api/v1/namespaces/lim", headers=ADMIN).status_code == 201
        yield live
    finally:
        live.close()


def sample(node: LiveNode, name: str, **labels: str) -> float:
    return node.rt.metrics.registry.get_sample_value(name, labels or None) or 0.0


def refused_as_full(r: httpx.Response, which: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    assert int(r.headers["Retry-After"]) >= 1
    body = r.json()
    assert body["type"].endswith("too-many-watches") and which in body["detail"], body


def open_streams(node: LiveNode, streams: list[Stream], n: int, **params: str) -> None:
    for _ in range(n):
        s = Stream(node.url, {"namespace": "lim", "heartbeat": "1s", **params}, SSE)
        streams.append(s)
        s.wait("the stream to open", lambda s=s: bool(s.events))


def test_watches_per_target_and_per_node_are_capped_and_counted(
    limited: LiveNode, streams: list[Stream]
) -> None:
    c = limited.client
    open_streams(limited, streams, 2, key="hot")
    assert sample(limited, "confman_watch_subscribers") == 2
    before = sample(limited, "confman_watch_refused_total", reason="key")
    r = c.get("/api/v1/watch", params={"namespace": "lim", "key": "hot"}, headers=SSE)
    refused_as_full(r, "namespace 'lim' key 'hot'")
    assert sample(limited, "confman_watch_refused_total", reason="key") == before + 1
    # a long poll of the same target is refused too; another target still has room
    r = c.get("/api/v1/watch", params={"namespace": "lim", "key": "hot"}, headers=VIEWER)
    refused_as_full(r, "namespace 'lim' key 'hot'")
    open_streams(limited, streams, 1, prefix="cold")
    before = sample(limited, "confman_watch_refused_total", reason="node")
    r = c.get("/api/v1/watch", params={"namespace": "lim", "key": "other"}, headers=VIEWER)
    refused_as_full(r, "node")
    assert sample(limited, "confman_watch_refused_total", reason="node") == before + 1
    for s in streams:
        s.close()
    streams.clear()
    wait_for(lambda: sample(limited, "confman_watch_subscribers") == 0, 10, "slots freed")
    r = c.get("/api/v1/watch", params={"namespace": "lim", "key": "hot"}, headers=VIEWER)
    assert r.status_code == 200


def test_long_polls_hold_a_slot_only_while_they_wait(limited: LiveNode) -> None:
    for _ in range(10):  # more than the node's cap, one after another
        r = limited.client.get("/api/v1/watch", params={"since": "0"}, headers=VIEWER)
        assert r.status_code == 200
    assert sample(limited, "confman_watch_subscribers") == 0


def test_long_poll_pages_are_bounded_by_bytes_and_lose_nothing(limited: LiveNode) -> None:
    c = limited.client
    since = c.get("/api/v1/watch", headers=VIEWER).json()["index"]
    written = []
    for i in range(12):
        r = c.put(
            "/api/v1/namespaces/lim/config/big",
            json={"value": f"{i:02d}" + "x" * 1000},
            headers=ADMIN,
        )
        written.append(int(r.headers["X-Confman-Index"]))
    cut = sample(limited, "confman_watch_pages_cut_total")
    seen: list[int] = []
    cursor = since
    for _ in range(20):
        r = c.get(
            "/api/v1/watch",
            params={"namespace": "lim", "key": "big", "since": cursor},
            headers=VIEWER,
        )
        body = r.json()
        if not body["events"]:
            break
        assert len(r.content) <= LIMITED["watch_page_bytes"] + 1200  # at most one over
        seen += [e["index"] for e in body["events"]]
        assert body["index"] == body["events"][-1]["index"] or body["index"] >= written[-1]
        cursor = body["index"]
    assert seen == written
    assert sample(limited, "confman_watch_pages_cut_total") > cut


def test_a_change_larger_than_a_page_is_still_delivered(limited: LiveNode) -> None:
    c = limited.client
    since = c.get("/api/v1/watch", headers=VIEWER).json()["index"]
    r = c.put("/api/v1/namespaces/lim/config/huge", json={"value": "h" * 10_000}, headers=ADMIN)
    index = int(r.headers["X-Confman-Index"])
    params = {"namespace": "lim", "key": "huge", "since": since}
    body = c.get("/api/v1/watch", params=params, headers=VIEWER).json()
    assert [e["index"] for e in body["events"]] == [index]


def test_sse_batches_are_bounded_by_bytes_and_lose_nothing(
    limited: LiveNode, streams: list[Stream]
) -> None:
    c = limited.client
    since = c.get("/api/v1/watch", headers=VIEWER).json()["index"]
    written = []
    for i in range(12):
        r = c.put(
            "/api/v1/namespaces/lim/config/sse",
            json={"value": f"{i:02d}" + "y" * 1000},
            headers=ADMIN,
        )
        written.append(int(r.headers["X-Confman-Index"]))
    cut = sample(limited, "confman_watch_pages_cut_total")
    params = {"namespace": "lim", "key": "sse", "since": str(since), "heartbeat": "1s"}
    s = Stream(limited.url, params, SSE)
    streams.append(s)
    s.wait("every change", lambda: len(s.changes()) >= len(written))
    assert [d["index"] for _, d in s.changes()] == written
    assert sample(limited, "confman_watch_pages_cut_total") > cut
