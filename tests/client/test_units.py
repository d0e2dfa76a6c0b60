"""The client's pieces without a cluster: SSE parsing, watch resumption, the retry policy
against scripted answers, errors and rendering."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import httpx
import orjson
import pytest

from confman.client import (
    Client,
    ConnectionFailed,
    HistoryCompacted,
    NotFound,
    PreconditionFailed,
    Unauthorized,
    Unavailable,
)
from confman.client.core import ClientCore
from confman.client.plan import Backoff, Endpoints, base_of
from confman.client.render import explain, table, to_json
from confman.client.sse import ServerEvent, SSEParser
from confman.client.watching import WatchState

A, B, C = "http://a:1", "http://b:2", "http://c:3"


# -- SSE -----------------------------------------------------------------------------------


def parse(text: str) -> list[ServerEvent]:
    p = SSEParser()
    out = [p.feed(line) for line in text.split("\n")]
    return [e for e in out if e is not None]


def test_sse_parser_follows_the_whatwg_rules() -> None:
    events = parse(
        "retry: 1000\n: a comment\nevent: progress\nid: 7\ndata: {}\n\n"
        "data: line1\ndata:line2\n\n"
        "id: 9\n\n"  # no data: nothing dispatched
        "data: x\n\n"
    )
    assert events == [
        ServerEvent("progress", "{}", "7"),
        ServerEvent("message", "line1\nline2", None),
        ServerEvent("message", "x", None),
    ]


# -- watch resumption ----------------------------------------------------------------------


def change(index: int, key: str, last: bool = True) -> ServerEvent:
    data = {"type": "config.updated", "namespace": "n", "key": key, "value": "v"}
    data |= {"version": 1, "index": index}
    return ServerEvent("message", orjson.dumps(data).decode(), str(index) if last else None)


def state(since: int | None = None) -> WatchState:
    core = ClientCore([A, B], "k", retry_timeout=1, idempotent_writes=True, forward_writes=False)
    return WatchState(core, "n", None, None, since, 5.0, None)


def test_watch_resumes_after_the_last_complete_index_and_skips_what_it_delivered() -> None:
    s = state(since=3)
    first = s.attempt()
    assert first.url == A + "/api/v1/watch"
    assert first.params["since"] == "3" and first.headers["Last-Event-ID"] == "3"
    assert s.event(ServerEvent("progress", '{"index": 3}', "3")) is None
    assert s.event(change(4, "a")).key == "a"  # type: ignore[union-attr]
    # index 5 carries two events; the connection breaks after the first
    assert s.event(change(5, "b", last=False)).key == "b"  # type: ignore[union-attr]
    assert s.cursor == 4
    s.failed("broken")
    again = s.attempt()
    assert again.url == B + "/api/v1/watch" and again.headers["Last-Event-ID"] == "4"
    assert s.event(change(5, "b", last=False)) is None  # seen already
    assert s.event(change(5, "c")).key == "c"  # type: ignore[union-attr]
    assert s.cursor == 5


def test_watch_from_now_learns_its_start_from_the_first_progress_event() -> None:
    s = state()
    assert "since" not in s.attempt().params
    s.event(ServerEvent("progress", '{"index": 40}', "40"))
    assert s.cursor == 40 and s.attempt().params["since"] == "40"


def test_compacted_stream_raises_history_compacted() -> None:
    s = state(since=1)
    problem = {"title": "History compacted", "status": 410, "detail": "gone"}
    with pytest.raises(HistoryCompacted):
        s.event(ServerEvent("compacted", orjson.dumps(problem).decode(), None))


# -- retry policy --------------------------------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*answers: Handler | httpx.Response | Exception) -> tuple[httpx.MockTransport, list]:
    seen: list[httpx.Request] = []
    queue = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = next(queue)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    return httpx.MockTransport(handle), seen


ENTRY = {
    "namespace": "n",
    "key": "k",
    "value": "v",
    "type": "string",
    "version": 1,
    "updatedAt": "2026-01-01T00:00:00.000000Z",
    "updatedBy": "me",
}


def ready(role: str, leader: str | None) -> httpx.Response:
    body = {"status": "ready", "cluster": {"role": role, "leader": leader}}
    return httpx.Response(200 if leader else 503, json=body)


def problem(status: int, title: str, **headers: str) -> httpx.Response:
    body = {"title": title, "status": status, "detail": title, "traceId": "t"}
    return httpx.Response(status, json=body, headers=headers)


def test_write_discovers_the_leader_follows_307_and_retries_503_with_one_key() -> None:
    transport, seen = scripted(
        httpx.ConnectError("refused"),  # A's /health/ready
        ready("follower", B + "/"),  # B names the leader
        ready("follower", B + "/"),  # C
        problem(503, "Replication timed out"),  # B, the leader, times out
        httpx.ConnectError("refused"),  # discovery again: A
        ready("leader", B + "/"),  # B now
        httpx.Response(307, headers={"Location": C + "/api/v1/namespaces/n/config/k"}),
        httpx.Response(201, json=ENTRY, headers={"X-Confman-Index": "12"}),
    )
    with Client([A, B, C], "key", transport=transport, retry_timeout=5) as c:
        entry = c.put("n", "k", "v")
    assert entry.version == 1 and entry.index == 12
    writes = [r for r in seen if r.method == "PUT"]
    assert [str(r.url.copy_with(path="/")) for r in writes] == [B + "/", B + "/", C + "/"]
    keys = {r.headers["Idempotency-Key"] for r in writes}
    assert len(keys) == 1 and all(r.headers["X-Api-Key"] == "key" for r in writes)


def test_reads_move_to_the_next_endpoint_when_one_fails() -> None:
    transport, seen = scripted(
        httpx.ConnectError("refused"),
        problem(503, "No leader available"),
        httpx.Response(200, json=ENTRY, headers={"X-Confman-Index": "3"}),
    )
    with Client([A, B, C], "key", transport=transport) as c:
        assert c.get("n", "k", consistency="linearizable").index == 3
    assert [r.url.host for r in seen] == ["a", "b", "c"]
    assert seen[0].url.params["consistency"] == "linearizable"


def test_errors_are_typed_and_not_retried() -> None:
    transport, seen = scripted(
        problem(404, "Configuration not found"),
        ready("leader", A + "/"),
        problem(412, "Precondition failed", ETag='"4"'),
        problem(401, "Unauthorized"),
    )
    with Client([A], "key", transport=transport) as c:
        with pytest.raises(NotFound):
            c.get("n", "k")
        with pytest.raises(PreconditionFailed) as pf:
            c.put("n", "k", "v", if_match=3)
        assert pf.value.current_version == 4
        with pytest.raises(Unauthorized) as un:
            c.namespaces()
    assert len(seen) == 4 and seen[2].headers["If-Match"] == '"3"'
    assert "CONFMAN_API_KEY" in explain(un.value, [A])


def test_retry_budget_ends_in_the_last_answer_or_connection_failed() -> None:
    transport, _ = scripted(*itertools.repeat(problem(503, "No leader available"), 100))
    with (
        Client([A], "key", transport=transport, retry_timeout=0.3) as c,
        pytest.raises(Unavailable),
    ):
        c.namespaces()
    transport, _ = scripted(*itertools.repeat(httpx.ReadTimeout("slow"), 100))
    with Client([A], "key", transport=transport, retry_timeout=0.3) as c:
        with pytest.raises(ConnectionFailed) as cf:
            c.put("n", "k", "v")
        assert cf.value.outcome_unknown  # sent, no answer: it may have been applied


def test_a_write_without_a_key_is_not_resent_after_an_ambiguous_failure() -> None:
    transport, seen = scripted(ready("leader", A + "/"), httpx.ReadTimeout("slow"))
    client = Client([A], "key", transport=transport, idempotent_writes=False)
    with client as c, pytest.raises(ConnectionFailed) as cf:
        c.put("n", "k", "v")
    assert cf.value.outcome_unknown and len(seen) == 2


def test_endpoints_and_helpers() -> None:
    ep = Endpoints.parse(" http://a:1/ ,http://b:2")
    assert ep.urls == [A, B]
    for bad in ("", "a:1", "ftp://x"):
        with pytest.raises(ValueError):
            Endpoints.parse(bad)
    assert base_of("http://l:9/base/api/v1/x?q=1", "/api/v1/x") == "http://l:9/base"
    assert base_of("http://l:9/other", "/api/v1/x") == "http://l:9"
    delays = [Backoff(base=0.1, cap=1.0).next() for _ in range(50)]
    assert all(0.05 <= d <= 0.1 for d in delays)
    b = Backoff(base=0.1, cap=1.0)
    assert all(0.5 <= d <= 1.0 for d in [b.next() for _ in range(10)][5:])


def test_rendering() -> None:
    assert table(["a", "bee"], [(1, None), ("x" * 70, "y\nz")]).splitlines() == [
        "A" + " " * 61 + "BEE",
        "1" + " " * 61 + "-",
        "x" * 59 + "…  y\\nz",
    ]
    assert to_json([{"x": 1}], pretty=False) == '[{"x":1}]'
