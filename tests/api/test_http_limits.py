"""Issue 14, findings 1-3 on one in-process node: the fast front's backpressure, the heads
it must leave to aiohttp (smuggling), and the deadlines and connection caps of both fronts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confman.api.fastpath import FastConnection, FastFront
from tests.api.harness import KEYS, LiveNode, headers, wait_for

NS = "limits"
ADMIN = KEYS["admin"][0]
HEAD_S = 0.5
IDLE_S = 1.0
#: Slack for a deadline on two shared cores.
SLACK_S = 1.5
PER_IP = 6


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(
        tmp_path_factory.mktemp("limits"),
        http_request_head_timeout_s=HEAD_S,
        http_keepalive_timeout_s=IDLE_S,
        http_max_connections_per_ip=PER_IP,
    )
    try:
        r = live.client.put(f"/api/v1/namespaces/{NS}", headers=headers("admin"))
        assert r.status_code == 201
        for key, value in (("big", "b" * 500_000), ("small", "s")):
            r = live.client.put(
                f"/api/v1/namespaces/{NS}/config/{key}",
                json={"value": value},
                headers=headers("editor"),
            )
            assert r.status_code == 201, r.text
        live.client.close()  # its keep-alive connection would count against the caps
        yield live
    finally:
        live.close()


def front_of(node: LiveNode) -> FastFront:
    assert node.server is not None and node.server.front is not None
    return node.server.front


def get(key: str = "small", extra: str = "") -> bytes:
    path = f"/api/v1/namespaces/{NS}/config/{key}"
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n{extra}\r\n".encode()


def connect(node: LiveNode, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", int(node.url.rsplit(":", 1)[1])))
    return s


def metric(node: LiveNode, name: str, **labels: str) -> float:
    """A counter of the node's registry, read in-process (a request would take a place)."""
    registry = node.rt.metrics.registry
    value = node.lt.call(lambda: registry.get_sample_value(f"{name}_total", labels))
    return float(value or 0.0)


def buffered(node: LiveNode) -> int:
    """The largest write buffer of the fast front's connections."""

    def largest() -> int:
        sizes = [c._transport.get_write_buffer_size() for c in front_of(node).conns if c._transport]
        return max(sizes, default=0)

    return node.lt.call(largest)


def closed_within(s: socket.socket, limit: float) -> float:
    """Seconds until the server closed ``s`` (reading and dropping what it sent)."""
    start = time.monotonic()
    s.settimeout(limit)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


# -- finding 1: backpressure -----------------------------------------------------------


class FakeTransport:
    """Records what a protocol writes; calls pause_writing past ``high`` buffered bytes,
    as asyncio's transports do, and drains only when told."""

    def __init__(self, high: int = 1 << 16) -> None:
        self.high = high
        self.buffered = 0
        self.chunks: list[bytes] = []
        self.protocol: Any = None
        self.paused = False
        self.reading = True
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.9", 1234) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > self.high and not self.paused:
            self.paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol


def attach(node: LiveNode) -> tuple[FastConnection, FakeTransport]:
    def make() -> tuple[FastConnection, FakeTransport]:
        conn = front_of(node).protocol()
        transport = FakeTransport()
        transport.protocol = conn
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    return node.lt.call(make)


def answers(transport: FakeTransport) -> int:
    return sum(c.count(b"HTTP/1.1 200 OK\r\n") for c in transport.chunks)


def test_the_front_stops_answering_while_the_client_does_not_read(node: LiveNode) -> None:
    conn, transport = attach(node)
    try:
        node.lt.call(lambda: conn.data_received(get("big") * 40))
        assert answers(transport) == 1, "answered past a full write buffer"
        assert not transport.reading, "kept reading while it could not write"
        for expected in range(2, 41):
            node.lt.call(transport.drain)
            node.lt.run(_settle())
            assert answers(transport) == expected
        node.lt.call(transport.drain)
        node.lt.run(_settle())
        assert transport.reading
    finally:
        node.lt.call(conn.close)
        node.lt.call(lambda: conn.connection_lost(None))


async def _settle() -> None:
    """Let callbacks scheduled with call_soon run."""
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)


def test_answers_per_callback_are_capped(node: LiveNode) -> None:
    conn, transport = attach(node)
    transport.high = 1 << 30
    try:
        n = 500
        node.lt.call(lambda: conn.data_received(get() * n))
        first = answers(transport)
        assert 0 < first < n, f"{first} answers in one callback"
        wait_for(lambda: node.lt.call(lambda: answers(transport)) == n, 10, "all answers")
        assert b"".join(transport.chunks).count(b'"value":"s"') == n
    finally:
        node.lt.call(conn.close)
        node.lt.call(lambda: conn.connection_lost(None))


def test_pipelined_big_gets_on_a_socket_that_reads_late_arrive_whole(node: LiveNode) -> None:
    s = connect(node)
    try:
        n = 60
        s.sendall(get("big") * n)
        wait_for(
            lambda: metric(node, "confman_http_write_pauses") >= 1 or buffered(node) > 4 << 20,
            10,
            "a write pause",
        )
        size = buffered(node)
        assert size < 4 << 20, f"{size} bytes buffered for a client that does not read"
        seen, tail, total = 0, b"", 0
        s.settimeout(20)
        while seen < n or total < n * 500_000:
            chunk = s.recv(1 << 20)
            assert chunk, "closed before every answer"
            seen += (tail + chunk).count(b"HTTP/1.1 200 OK") - tail.count(b"HTTP/1.1 200 OK")
            tail = chunk[-20:]
            total += len(chunk)
    finally:
        s.close()


# -- finding 2: heads the fast front must not accept -------------------------------------

PATH = f"/api/v1/namespaces/{NS}/config"


def smuggling_get(key: str) -> bytes:
    body = (
        f"PUT {PATH}/{key} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n"
        'Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{"value":"bad"}'
    ).encode()
    head = (
        f"GET {PATH}/small HTTP/1.1\r\nHost: x\nContent-Length: {len(body)}\r\n"
        f"X-Api-Key: {ADMIN}\r\n\r\n"
    ).encode()
    return head + body


def hidden_chunked_put(key: str) -> bytes:
    body = b'{"value":"bad"}'
    chunked = b"f\r\n" + body + b"\r\n0\r\n\r\n"
    return (
        f"PUT {PATH}/{key} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ADMIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(chunked)}\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunked


def status_of(node: LiveNode, request: bytes) -> tuple[int, bytes]:
    s = connect(node)
    try:
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return int(got.split(b" ", 2)[1]), got
    finally:
        s.close()


def absent(node: LiveNode, key: str) -> bool:
    r = httpx.get(f"{node.url}{PATH}/{key}", headers=headers("viewer"))
    return r.status_code == 404


@pytest.mark.parametrize("make", [smuggling_get, hidden_chunked_put])
def test_a_smuggled_write_is_refused_and_writes_nothing(node: LiveNode, make: Any) -> None:
    key = f"smuggled-{make.__name__}"
    status, got = status_of(node, make(key))
    assert status == 400, got
    assert got.count(b"HTTP/1.") == 1, got
    assert absent(node, key)


HOSTILE = {
    "bare LF": get().replace(b"Host: x\r\n", b"Host: x\nX-B: 2\r\n"),
    "bare CR": get(extra="User-Agent: a\rX-B: 2\r\n"),
    "NUL": get(extra="User-Agent: a\x00b\r\n"),
    "obs-fold": get(extra="User-Agent: a\r\n b\r\n"),
    "no Host": get().replace(b"Host: x\r\n", b""),
    "two Hosts": get(extra="Host: y\r\n"),
    "two keys": get(extra=f"X-Api-Key: {ADMIN}\r\n"),
    "two lengths": get(extra="Content-Length: 0\r\nContent-Length: 0\r\n"),
    "chunked": get(extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
    "identity": get(extra="Transfer-Encoding: identity\r\n"),
    "space before colon": get(extra="User-Agent : a\r\n"),
    "two agents": get(extra="User-Agent: a\r\nUser-Agent: b\r\n"),
    # llhttp raises HttpParserUpgrade (no HttpParserError) for these: found by the fuzzer
    "upgrade": get(extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    "upgrade, no Host": get(extra="Connection: Upgrade\r\nUpgrade: websocket\r\n").replace(
        b"Host: x\r\n", b""
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_heads_are_left_to_aiohttp(node: LiveNode, name: str) -> None:
    request = HOSTILE[name]
    front = front_of(node)
    before = node.lt.call(lambda: front.answered)
    fast = status_of(node, request)
    assert node.lt.call(lambda: front.answered) == before, "the fast front answered it"
    line, rest = request.split(b"\r\n", 1)
    general = status_of(node, line + b"\r\nX-Take-The-General-Path: 1\r\n" + rest)
    assert fast[0] == general[0], (fast[1][:300], general[1][:300])


# -- finding 3: deadlines and caps -----------------------------------------------------


def test_a_partial_head_is_closed_at_the_deadline(node: LiveNode) -> None:
    before = metric(node, "confman_http_connection_timeouts", phase="head")
    with connect(node) as s:
        s.sendall(get()[:30])
        assert closed_within(s, HEAD_S + SLACK_S) >= HEAD_S * 0.8
    assert metric(node, "confman_http_connection_timeouts", phase="head") == before + 1


def test_a_silent_connection_is_closed_at_the_head_deadline(node: LiveNode) -> None:
    with connect(node) as s:
        closed_within(s, HEAD_S + SLACK_S)


def test_a_head_trickling_in_is_closed_at_the_deadline(node: LiveNode) -> None:
    with connect(node) as s:
        start = time.monotonic()
        s.settimeout(0.1)
        for b in get():  # a byte every 0.1 s: the head would take seconds
            try:
                s.sendall(bytes([b]))
                if s.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            raise AssertionError("answered a head that took longer than the deadline")
        else:
            raise AssertionError("the trickling head was not closed")
        assert time.monotonic() - start < HEAD_S + SLACK_S


def test_a_later_partial_head_on_a_connection_aiohttp_has_is_closed(node: LiveNode) -> None:
    before = metric(node, "confman_http_connection_timeouts", phase="head")
    with connect(node) as s:
        s.sendall(get(extra="X-Take-The-General-Path: 1\r\n"))  # handed to aiohttp
        got = b""
        while b'"value":"s"' not in got:
            got += s.recv(65536)
        s.sendall(get()[:30])
        assert closed_within(s, HEAD_S + SLACK_S) >= HEAD_S * 0.8
    assert metric(node, "confman_http_connection_timeouts", phase="head") == before + 1


def test_idle_keepalive_connections_are_closed_on_both_fronts(node: LiveNode) -> None:
    for extra in ("", "X-Take-The-General-Path: 1\r\n"):
        with connect(node) as s:
            s.sendall(get(extra=extra))
            start = time.monotonic()
            got = b""
            while b'"value":"s"' not in got:
                got += s.recv(65536)
            closed_within(s, IDLE_S + SLACK_S)
            assert time.monotonic() - start >= IDLE_S * 0.8, extra


def test_connections_over_the_address_cap_are_closed_at_once(node: LiveNode) -> None:
    before = metric(node, "confman_http_connections_refused", reason="address")
    held = [connect(node, "127.0.0.2") for _ in range(PER_IP)]
    try:
        for s in held:  # each one answered: none was refused
            s.sendall(get())
            assert b"200 OK" in s.recv(65536)
        extra = connect(node, "127.0.0.2")
        with extra:
            assert closed_within(extra, 1.0) < 1.0
        other = connect(node, "127.0.0.3")  # another address still gets in
        with other:
            other.sendall(get())
            assert b"200 OK" in other.recv(65536)
        assert metric(node, "confman_http_connections_refused", reason="address") == before + 1
    finally:
        for s in held:
            s.close()
    wait_for(
        lambda: node.lt.call(lambda: front_of(node).open_from("127.0.0.2")) == 0,
        5,
        "the held connections to be released",
    )


def test_connections_over_the_node_cap_are_closed_at_once(tmp_path: Path) -> None:
    live = LiveNode(tmp_path, http_max_connections=3)
    held: list[socket.socket] = []
    try:
        live.client.close()
        held = [connect(live, f"127.0.0.{10 + i}") for i in range(3)]
        for s in held:
            s.sendall(get(extra="X-Take-The-General-Path: 1\r\n"))  # handed to aiohttp
            assert s.recv(65536).startswith(b"HTTP/1.1 404")
        with connect(live, "127.0.0.20") as extra:
            assert closed_within(extra, 1.0) < 1.0
        assert metric(live, "confman_http_connections_refused", reason="node") == 1
        held.pop().close()  # a connection handed to aiohttp frees its place when it ends
        wait_for(lambda: live.lt.call(lambda: front_of(live).open_count) == 2, 5, "the release")
    finally:
        for s in held:
            s.close()
        live.close()
