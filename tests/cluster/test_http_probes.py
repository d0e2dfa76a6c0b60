"""Issue 14's black-box probes of findings 1-3, on real node processes over raw sockets:
a client that pipelines big GETs and never reads, a head that smuggles a write behind a
bare LF, partial heads, idle connections and the per-address cap."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import boot, create_namespace, put_config

NS = "probes"
ENTRY = f"/api/v1/namespaces/{NS}/config"
HEAD_S = 1.0
IDLE_S = 2.0
SLACK_S = 2.0
PER_IP = 8
MiB = 1 << 20


def raw(c: ProcessCluster, nid: str, source: str = "127.0.0.1") -> socket.socket:
    """A raw connection to the node's API (TLS when the cluster serves HTTPS)."""
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", c.nodes[nid].http_port))
    if c.url(nid).startswith("https"):
        from confman.verify.cluster import api_client_context

        return api_client_context().wrap_socket(s, server_hostname="127.0.0.1")
    return s


def rss(c: ProcessCluster, nid: str) -> int:
    proc = c.nodes[nid].proc
    assert proc is not None
    text = Path(f"/proc/{proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text)[1]) * 1024  # type: ignore[index]


def counter(c: ProcessCluster, nid: str, name: str, labels: str = "") -> float:
    text = c.request(nid, "GET", "metrics").text
    found = re.findall(rf"^{name}_total{re.escape(labels)} (\S+)$", text, re.M)
    return float(found[0]) if found else 0.0


def terms(c: ProcessCluster) -> dict[str, Any]:
    return {nid: (st or {}).get("cluster", {}).get("term") for nid, st in c.statuses().items()}


def closed_after(s: socket.socket, limit: float) -> float:
    """Seconds until the server closed ``s`` (what it sends is read and dropped)."""
    start = time.monotonic()
    s.settimeout(limit)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit} s") from None
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - start


def during(seconds: float, check: Callable[[], None]) -> None:
    """Run ``check`` over and over for ``seconds`` (an observation window, not a wait)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check()


def cluster(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    c = make_cluster(
        3,
        extra={
            "http": {
                "request_head_timeout_s": HEAD_S,
                "keepalive_timeout_s": IDLE_S,
                "max_connections_per_ip": PER_IP,
            }
        },
    )
    boot(c)
    create_namespace(c, NS)
    return c


def test_pipelined_big_gets_to_a_client_that_never_reads(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = cluster(make_cluster)
    put_config(c, NS, "big", "b" * 900_000)
    leader = c.wait_leader()
    follower = next(n for n in c.ids if n != leader)
    c.wait_for(
        lambda: c.request(follower, "GET", f"{ENTRY}/big").status_code == 200,
        timeout=15,
        what="the entry",
    )
    before_rss, before_terms = rss(c, follower), terms(c)
    pauses = counter(c, follower, "confman_http_write_pauses")
    request = (
        f"GET {ENTRY}/big HTTP/1.1\r\nHost: x\r\nX-Api-Key: {c.keys['admin']}\r\n\r\n"
    ).encode()
    s = raw(c, follower)
    try:
        s.sendall(request * 300)  # about 28 KB; the answers would be 270 MB
        c.wait_for(
            lambda: (
                counter(c, follower, "confman_http_write_pauses") > pauses
                or rss(c, follower) - before_rss > 64 * MiB
            ),
            timeout=10,
            what="the front to stop answering the client that does not read",
        )

        def bounded() -> None:
            grown = rss(c, follower) - before_rss
            assert grown < 64 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
            start = time.monotonic()
            assert c.request(follower, "GET", "health", timeout=2).status_code == 200
            assert time.monotonic() - start < 1.0, "the node's loop is held"

        during(3.0, bounded)
        assert terms(c) == before_terms, "an election happened"
    finally:
        s.close()
    assert c.leader() == leader


def smuggling_get(c: ProcessCluster, key: str) -> bytes:
    body = (
        f"PUT {ENTRY}/{key} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {c.keys['admin']}\r\n"
        'Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{"value":"bad"}'
    ).encode()
    head = (
        f"GET {ENTRY}/seen HTTP/1.1\r\nHost: x\nContent-Length: {len(body)}\r\n"
        f"X-Api-Key: {c.keys['admin']}\r\n\r\n"
    ).encode()
    return head + body


def hidden_chunked_put(c: ProcessCluster, key: str) -> bytes:
    chunked = b'f\r\n{"value":"bad"}\r\n0\r\n\r\n'
    return (
        f"PUT {ENTRY}/{key} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {c.keys['admin']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(chunked)}\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunked


def test_heads_smuggling_a_write_are_400_and_write_nothing(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = cluster(make_cluster)
    put_config(c, NS, "seen", "v")
    leader = c.wait_leader()
    for make in (smuggling_get, hidden_chunked_put):
        key = f"smuggled-{make.__name__}"
        with raw(c, leader) as s:
            s.sendall(make(c, key))
            got = b""
            s.settimeout(5)
            try:
                while chunk := s.recv(65536):
                    got += chunk
            except (ConnectionResetError, ssl.SSLError):
                pass
            except TimeoutError:  # kept open: answered as if it were a request or two
                pass
        assert got.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), got[:200]
        assert got.count(b"HTTP/1.") == 1, got
        r = c.request(leader, "GET", f"{ENTRY}/{key}?consistency=linearizable")
        assert r.status_code == 404, r.text


def test_partial_heads_and_idle_connections_are_closed_at_their_deadlines(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = cluster(make_cluster)
    put_config(c, NS, "k", "v")
    nid = c.wait_leader()
    before = counter(c, nid, "confman_http_connection_timeouts", '{phase="head"}')
    partial = raw(c, nid)
    silent = raw(c, nid)
    idle = raw(c, nid)
    with partial, silent, idle:
        partial.sendall(f"GET {ENTRY}/k HTTP/1.1\r\nHost: x\r\n".encode())
        idle.sendall(
            f"GET {ENTRY}/k HTTP/1.1\r\nHost: x\r\nX-Api-Key: {c.keys['admin']}\r\n\r\n".encode()
        )
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert closed_after(partial, HEAD_S + SLACK_S) >= HEAD_S * 0.8
        closed_after(silent, SLACK_S)
        assert closed_after(idle, IDLE_S + SLACK_S) >= (IDLE_S - HEAD_S) * 0.8
    assert counter(c, nid, "confman_http_connection_timeouts", '{phase="head"}') >= before + 2
    assert counter(c, nid, "confman_http_connection_timeouts", '{phase="idle"}') >= 1


def test_connections_over_the_address_cap_are_closed_and_counted(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = cluster(make_cluster)
    nid = c.wait_leader()
    held = [raw(c, nid, "127.0.0.2") for _ in range(PER_IP)]
    try:
        for s in held:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        with raw(c, nid, "127.0.0.2") as extra:
            assert closed_after(extra, SLACK_S) < SLACK_S
        assert counter(c, nid, "confman_http_connections_refused", '{reason="address"}') == 1
    finally:
        for s in held:
            s.close()
