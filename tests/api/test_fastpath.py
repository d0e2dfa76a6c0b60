"""The fast path for plain entry reads answers exactly as the aiohttp app does, and hands
every other request (with the rest of its connection) to aiohttp intact."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web

from confman.api.fastpath_conn import MAX_HEAD
from confman.api.fastpath_parse import HeadReader, RawHead
from confman.api.problems import Problem
from confman.api.routes_config import ENTRY_ROUTE
from tests.api.harness import KEYS, LiveNode, headers

NS = "fastpath"
PATH = f"/api/v1/namespaces/{NS}/config/k1"
ADMIN = KEYS["admin"][0]
#: An extra header the fast path does not know: the same request, answered by aiohttp.
SLOW = "X-Take-The-General-Path: 1\r\n"
VOLATILE = {"date", "x-correlation-id"}


@pytest.fixture(scope="module", autouse=True)
def entries(node: LiveNode) -> None:
    r = httpx.put(f"{node.url}/api/v1/namespaces/{NS}", headers=headers("admin"))
    assert r.status_code in (200, 201)
    for key, value in (("k1", "v1"), ("k2", "ünïcode ✓")):
        r = httpx.put(
            f"{node.url}/api/v1/namespaces/{NS}/config/{key}",
            json={"value": value},
            headers=headers("editor"),
        )
        assert r.status_code in (200, 201), r.text


class Raw:
    """One raw HTTP/1.1 connection: send bytes, read whole responses."""

    def __init__(self, node: LiveNode) -> None:
        self.sock = socket.create_connection(("127.0.0.1", int(node.url.rsplit(":", 1)[1])), 10)
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def response(self, bodyless: bool = False) -> tuple[str, list[tuple[str, str]], bytes]:
        """The next response; ``bodyless`` for the answer to a HEAD."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        fields = [(n.strip(), v.strip()) for n, v in (line.split(":", 1) for line in lines)]
        lengths = [int(v) for n, v in fields if n.lower() == "content-length"]
        length = 0 if bodyless or not lengths else lengths[0]
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, fields, body

    def closed_by_peer(self) -> bool:
        return self.sock.recv(1) == b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(node: LiveNode) -> Iterator[Raw]:
    conn = Raw(node)
    yield conn
    conn.close()


def get(path: str = PATH, key: str = ADMIN, extra: str = "") -> str:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n{extra}\r\n"


def stable(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in fields if n.lower() not in VOLATILE]


def answer(node: LiveNode, request: str) -> bytes | None:
    """What the fast path itself makes of ``request`` (None: it hands it over)."""
    front = node.server.front if node.server is not None else None
    assert front is not None, "the fast path is on by default"
    raw = read_head(request.encode("latin-1"))
    return None if raw is None else node.lt.call(lambda: front.answer(raw, None))


def read_head(request: bytes) -> RawHead | None:
    """The head of ``request`` as the fast front's parser reads it."""
    return HeadReader().head(request.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")


FAST = [
    get(),
    get(path=f"/api/v1/namespaces/{NS}/config/k2"),
    get(key=KEYS["viewer"][0]),
    get(extra="User-Agent: t\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n"),
    get(extra="Content-Type: application/json\r\nCache-Control: no-cache\r\nPragma: x\r\n"),
    get(extra="Connection: Keep-Alive\r\nContent-Length: 0\r\n"),
    get(extra="X-Correlation-Id: trace-1.2:3\r\n"),
]

GENERAL = [
    get(path=f"/api/v1/namespaces/{NS}/config/missing"),  # 404
    get(path="/api/v1/namespaces/nowhere/config/k1"),  # 404
    get(key="wrong-key"),  # 401
    get(key=KEYS["scoped"][0]),  # 403
    f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n",  # 401
    get(path=PATH + "?consistency=linearizable"),
    get(path=PATH + "?consistency=bogus"),  # 400
    get(path=f"/api/v1/namespaces/{NS}/config/%6B1"),  # percent-encoded k1
    get(path=f"/api/v1/namespaces/{NS}/config/.."),  # 400
    get(extra='If-None-Match: "1"\r\n'),  # 304
    get(extra="X-Confman-Consistency: lease\r\n"),
    get(extra="X-Correlation-Id: not valid!\r\n"),  # replaced by a generated id
    get(extra="X-Api-Key: second\r\n"),  # duplicate key header
    get(extra="Origin: http://elsewhere\r\n"),
    get(extra="Content-Length: 2\r\n") + "{}",
    f"HEAD {PATH} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n\r\n",
    f"GET http://x{PATH} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n\r\n",
    f"GET /api/v1/namespaces/{NS}/config HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n\r\n",
]


@pytest.mark.parametrize("request_", FAST)
def test_fast_answers_equal_the_general_path(node: LiveNode, raw: Raw, request_: str) -> None:
    assert answer(node, request_) is not None, "this request should take the fast path"
    raw.send(request_)
    fast = raw.response()
    head, _ = request_.split("\r\n\r\n", 1)
    raw.send(head + "\r\n" + SLOW + "\r\n")
    general = raw.response()
    assert fast[0] == general[0] == "HTTP/1.1 200 OK"
    assert stable(fast[1]) == stable(general[1])  # same headers, same order
    assert fast[2] == general[2]
    assert [n for n, _ in fast[1]] == [n for n, _ in general[1]]
    cid = dict(fast[1])["X-Correlation-Id"]
    if "X-Correlation-Id: " in request_:
        assert cid == dict(general[1])["X-Correlation-Id"] == "trace-1.2:3"
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", cid)


def with_slow(request_: str) -> str:
    head, body = request_.split("\r\n\r\n", 1)
    return head + "\r\n" + SLOW + "\r\n" + body


def scrubbed(
    response: tuple[str, list[tuple[str, str]], bytes], write: bool = False
) -> tuple[object, ...]:
    """A response without what differs between two answers to the same request (for a
    write also the log index it reached)."""
    status, fields, body = response
    cid = dict(fields).get("X-Correlation-Id", "")
    kept = [(n, v) for n, v in stable(fields) if not (write and n == "X-Confman-Index")]
    return status, kept, [n for n, _ in fields], body.replace(cid.encode(), b"<cid>")


@pytest.mark.parametrize("request_", GENERAL)
def test_other_requests_are_answered_by_aiohttp_unchanged(node: LiveNode, request_: str) -> None:
    assert answer(node, request_) is None, "this request is not of the fast shape"
    answers = []
    for sent in (request_, with_slow(request_)):
        conn = Raw(node)
        try:
            conn.send(sent)
            answers.append(scrubbed(conn.response(bodyless=sent.startswith("HEAD"))))
        finally:
            conn.close()
    assert answers[0] == answers[1]


def test_pipelined_requests_are_answered_in_order_across_the_handover(
    node: LiveNode, raw: Raw
) -> None:
    put = (
        f"PUT /api/v1/namespaces/{NS}/config/piped HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}"
        '\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"value":"p-1"}'
    )
    raw.send(get() + get(path=f"/api/v1/namespaces/{NS}/config/k2") + put + get())
    first, second, third, fourth = (raw.response() for _ in range(4))
    assert b'"value":"v1"' in first[2] and "ünïcode".encode() in second[2]
    assert third[0] in ("HTTP/1.1 200 OK", "HTTP/1.1 201 Created"), third
    assert b'"value":"v1"' in fourth[2]  # aiohttp keeps the connection after the handover


def test_a_head_arriving_byte_by_byte_is_answered(raw: Raw) -> None:
    for b in get().encode():
        raw.send(bytes([b]))
    status, _, body = raw.response()
    assert status == "HTTP/1.1 200 OK" and b'"value":"v1"' in body


def test_an_oversized_head_goes_to_aiohttp_which_refuses_it(raw: Raw) -> None:
    raw.send(get(extra=f"X-Filler: {'f' * (MAX_HEAD + 100)}\r\n"))
    status, fields, _ = raw.response()
    assert status.split()[1] in ("400", "431"), status
    assert dict(fields)["Content-Type"] == "application/problem+json"


def test_connection_close_and_http_1_0_are_honoured(node: LiveNode) -> None:
    for request_ in (
        get(extra="Connection: close\r\n"),
        f"GET {PATH} HTTP/1.0\r\nX-Api-Key: {ADMIN}\r\n\r\n",
    ):
        conn = Raw(node)
        try:
            conn.send(request_)
            status, _, body = conn.response()
            assert status.endswith("200 OK") and b'"value":"v1"' in body
            assert conn.closed_by_peer()
        finally:
            conn.close()


def requests_answered(node: LiveNode, method: str, status: int) -> float:
    """The entry route's request counter for ``method`` and ``status`` (0 before any)."""
    text = httpx.get(f"{node.url}/metrics", headers=headers("admin")).text
    pattern = (
        rf'confman_http_requests_total\{{method="{method}",route="'
        + re.escape(ENTRY_ROUTE)
        + rf'",status="{status}"\}} (\S+)'
    )
    found = re.findall(pattern, text)
    assert len(found) <= 1, found
    return float(found[0]) if found else 0.0


def access_logged_alike(
    caplog: pytest.LogCaptureFixture, fast_cid: str, slow_cid: str, fields: tuple[str, ...]
) -> None:
    """The access-log records of the two requests carry the same fields and values."""
    records = {
        r.fields["correlationId"]: r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "confman.api.access"
    }
    fast, slow = records[fast_cid], records[slow_cid]
    assert fast.keys() == slow.keys()
    for field in fields:
        assert fast[field] == slow[field], field


def test_fast_answers_count_in_the_same_metrics_series(node: LiveNode, raw: Raw) -> None:
    before = requests_answered(node, "GET", 200)
    for _ in range(3):
        raw.send(get())
        raw.response()
    raw.send(get(extra=SLOW))  # the general path labels its route the same way
    raw.response()
    assert requests_answered(node, "GET", 200) == before + 4


def test_fast_answers_are_access_logged_like_the_others(
    raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="confman.api.access"):
        raw.send(get(extra="X-Correlation-Id: fast-log\r\n"))
        raw.response()
        raw.send(get(extra="X-Correlation-Id: slow-log\r\n" + SLOW))
        raw.response()
    access_logged_alike(
        caplog, "fast-log", "slow-log", ("method", "path", "status", "actor", "remote")
    )


def test_stopping_closes_idle_fast_connections(tmp_path: Path) -> None:
    live = LiveNode(tmp_path)
    conn = None
    try:
        r = live.client.put(f"/api/v1/namespaces/{NS}", headers=headers("admin"))
        assert r.status_code == 201
        r = live.client.put(f"{PATH}", json={"value": "v1"}, headers=headers("editor"))
        assert r.status_code == 201
        conn = Raw(live)
        conn.send(get())
        assert conn.response()[0] == "HTTP/1.1 200 OK"
        assert live.server is not None and live.server.front is not None
        front = live.server.front
        assert live.lt.call(lambda: len(front.conns)) >= 1  # answered there, now idle
        live.lt.run(live.server.stop())
        live.server = None
        assert conn.closed_by_peer()
    finally:
        if conn is not None:
            conn.close()
        live.close()


def test_the_fast_path_can_be_switched_off(tmp_path: Path) -> None:
    live = LiveNode(tmp_path, fast_path=False)
    try:
        assert live.server is not None and live.server.front is not None
        front = live.server.front
        assert not front.answering
        live.client.put(f"/api/v1/namespaces/{NS}", headers=headers("admin"))
        live.client.put(f"{PATH}", json={"value": "v1"}, headers=headers("editor"))
        r = live.client.get(PATH, headers=headers("viewer"))
        assert r.status_code == 200 and r.json()["value"] == "v1"
        assert live.lt.call(lambda: front.answered) == 0
    finally:
        live.close()


# -- writes ----------------------------------------------------------------------------


def put(
    key: str = "w1",
    body: str = '{"value":"x"}',
    ns: str = NS,
    extra: str = "",
    api_key: str = ADMIN,
    ctype: str = "application/json",
) -> str:
    return (
        f"PUT /api/v1/namespaces/{ns}/config/{key} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {api_key}"
        f"\r\nContent-Type: {ctype}\r\nContent-Length: {len(body.encode())}\r\n{extra}\r\n{body}"
    )


def write_shape(node: LiveNode, request_: str) -> bool:
    """Whether the fast path takes ``request_`` (a PUT) as a write of its own."""
    front = node.server.front if node.server is not None else None
    assert front is not None
    _, body = request_.encode().split(b"\r\n\r\n", 1)
    raw = read_head(request_.encode())
    if raw is None:
        return False

    def check() -> bool:
        h = front.write_head(raw)
        if h is None:
            return False
        task = front.start_write(h, body, None)
        if task is None:
            return False
        task.cancel()  # only the decision matters here; the proposal may still apply
        return True

    return node.lt.call(check)


def scrub_write(response: tuple[str, list[tuple[str, str]], bytes]) -> tuple[object, ...]:
    status, fields, body = response
    volatile = VOLATILE | {"x-confman-index", "etag", "location"}
    doc = orjson.loads(body)
    for k in ("updatedAt", "key", "version", "traceId", "instance", "detail"):
        doc.pop(k, None)
    return (
        status,
        [(n, v) for n, v in fields if n.lower() not in volatile],
        [n for n, _ in fields],
        doc,
    )


def test_fast_writes_answer_like_the_general_path(node: LiveNode, raw: Raw) -> None:
    fast_key, slow_key = "fw-fast", "fw-slow"
    assert write_shape(node, put(key="fw-probe"))
    created = []
    for request_ in (put(key=fast_key), with_slow(put(key=slow_key))):
        raw.send(request_)
        created.append(raw.response())
    assert created[0][0] == "HTTP/1.1 201 Created"
    assert dict(created[0][1])["Location"] == f"/api/v1/namespaces/{NS}/config/{fast_key}"
    assert scrub_write(created[0]) == scrub_write(created[1])
    updated = []
    for request_ in (
        put(key=fast_key, body='{"value":"y","type":"t"}'),
        with_slow(put(key=slow_key, body='{"value":"y","type":"t"}')),
    ):
        raw.send(request_)
        updated.append(raw.response())
    assert updated[0][0] == "HTTP/1.1 200 OK"
    assert dict(updated[0][1])["ETag"] == '"2"'
    assert scrub_write(updated[0]) == scrub_write(updated[1])
    got = httpx.get(
        f"{node.url}/api/v1/namespaces/{NS}/config/{fast_key}", headers=headers("viewer")
    )
    assert got.json()["value"] == "y" and got.json()["type"] == "t"


def test_a_fast_write_to_a_missing_namespace_is_the_same_404(node: LiveNode, raw: Raw) -> None:
    request_ = put(ns="no-such-ns")
    assert write_shape(node, request_)
    raw.send(request_)
    fast = raw.response()
    raw.send(with_slow(request_))
    slow = raw.response()
    assert fast[0] == "HTTP/1.1 404 Not Found"
    assert scrubbed(fast, write=True) == scrubbed(slow, write=True)


GENERAL_WRITES = [
    put(extra='If-Match: "999"\r\n'),  # 412
    put(extra='If-None-Match: "1"\r\n'),  # 400
    put(extra="Idempotency-Key: \r\n"),  # 400
    put(ctype="text/plain"),  # 415
    put(ctype="application/json; charset=latin-1"),  # 415
    put(api_key=KEYS["viewer"][0]),  # 403
    put(api_key=KEYS["scoped"][0]),  # 403
    put(body="{"),  # 400
    put(body='{"value":"a","value":"b"}'),  # 400 duplicate key
    put(body='{"value":1}'),  # 400
    put(body='{"type":"x"}'),  # 400
    put(body='{"value":"a","type":""}'),  # 400
    put(body="[]"),  # 400
    put(key=".."),  # 400
    put(body=""),  # 400
]


@pytest.mark.parametrize("request_", GENERAL_WRITES)
def test_other_writes_are_answered_by_aiohttp_unchanged(node: LiveNode, request_: str) -> None:
    assert not write_shape(node, request_), "this write is not of the fast shape"
    answers = []
    for sent in (request_, with_slow(request_)):
        conn = Raw(node)
        try:
            conn.send(sent)
            answers.append(scrubbed(conn.response(), write=True))
        finally:
            conn.close()
    assert answers[0] == answers[1]
    assert str(answers[0][0]).split()[1] in ("400", "403", "412", "415"), answers[0]


def test_writes_go_the_general_way_when_forwarding_is_on(node: LiveNode) -> None:
    front = node.server.front if node.server is not None else None
    assert front is not None
    head = read_head(put().encode())
    assert head is not None

    def with_forwarding() -> object:
        front.ctx.forward_writes = True
        try:
            return front.write_head(head)
        finally:
            front.ctx.forward_writes = False

    assert node.lt.call(with_forwarding) is None
    assert node.lt.call(lambda: front.write_head(head)) is not None


RESPONSES = [
    lambda: web.Response(status=307, headers={"X-Confman-Leader": "n2", "Location": "http://l/p"}),
    lambda: Problem(503, "No leader available", "x", headers={"Retry-After": "1"}).response(
        "/p", "cid-1"
    ),
    lambda: Problem(500, detail="boom").response("/p", "cid-1"),
    lambda: web.Response(
        status=201, body=b'{"a":1}', headers={"Location": "/x"}, content_type="application/json"
    ),
]


def test_rendered_responses_are_byte_for_byte_aiohttp(node: LiveNode) -> None:
    front = node.server.front if node.server is not None else None
    assert front is not None

    async def serve_all() -> tuple[web.AppRunner, int]:
        @web.middleware
        async def cid(request: web.Request, handler: object) -> web.StreamResponse:
            resp = RESPONSES[int(request.match_info["i"])]()
            resp.headers["X-Correlation-Id"] = "cid-1"
            return resp

        app = web.Application(middlewares=[cid])

        async def unused(request: web.Request) -> web.Response:
            return web.Response()

        app.router.add_get("/{i}", unused)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, int(runner.addresses[0][1])

    runner, port = node.lt.run(serve_all())
    try:
        for i, make in enumerate(RESPONSES):
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                s.sendall(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                got = b""
                while b"\r\n\r\n" not in got or not got.endswith(
                    make().body or b"\r\n\r\n"  # type: ignore[operator]
                ):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            ours = node.lt.call(lambda make=make: front.render(make(), "cid-1"))
            date = re.compile(rb"Date: [^\r]*\r\n")
            assert date.sub(b"", ours) == date.sub(b"", got), (i, ours, got)
    finally:
        node.lt.run(runner.cleanup())


def test_fast_writes_count_and_log_like_the_others(
    node: LiveNode, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    statuses = (200, 201, 404)
    before = {s: requests_answered(node, "PUT", s) for s in statuses}
    with caplog.at_level(logging.INFO, logger="confman.api.access"):
        for request_ in (
            put(key="counted", extra="X-Correlation-Id: fast-put\r\n"),  # fast, 201
            with_slow(put(key="counted", extra="X-Correlation-Id: slow-put\r\n")),  # 200
            put(ns="no-such-ns"),  # fast, 404
        ):
            raw.send(request_)
            raw.response()
    assert {s: requests_answered(node, "PUT", s) - before[s] for s in statuses} == {
        200: 1,
        201: 1,
        404: 1,
    }
    access_logged_alike(caplog, "fast-put", "slow-put", ("method", "path", "actor", "remote"))
