"""The workload's recording rules, against a fake Confman served over loopback HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import pytest

from confman.verify.history import HistoryRecorder, Operation
from confman.verify.run import check_http, check_linearizable, checked_history
from confman.verify.workload import (
    Reply,
    Workload,
    WorkloadConfig,
    make_session,
    read_outcome,
    send,
    write_outcome,
)
from tests.verify.run_fakes import Canned, FakeConfman

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("kind", "reply", "expected"),
    [
        ("write", Reply(201, body={"version": 1}), ("ok", 1)),
        ("cas", Reply(200, body={"version": 4}), ("ok", 4)),
        ("cas", Reply(412, "Precondition failed"), ("ok", False)),
        ("write", Reply(412, "Precondition failed"), ("fail", None)),
        ("delete", Reply(204), ("ok", True)),
        ("delete", Reply(404, "Configuration not found"), ("ok", False)),
        ("delete", Reply(404, "Namespace not found"), ("info", None)),
        ("write", Reply(503, "No leader available"), ("fail", None)),
        ("write", Reply(503, "Write not committed"), ("fail", None)),
        ("write", Reply(503, "Replication timed out"), ("info", None)),
        ("write", Reply(503, "Node stopping"), ("info", None)),
        ("cas", Reply(500, "Internal server error"), ("info", None)),
        ("write", Reply(400, "Invalid request"), ("fail", None)),
        ("write", Reply(0, error="timeout"), ("info", None)),
        ("write", Reply(0, error="connection"), ("info", None)),
        ("write", Reply(0, error="refused"), ("fail", None)),
        ("delete", Reply(307, error="redirects"), ("fail", None)),
        ("write", Reply(200, body={"value": "x"}), ("info", None)),
    ],
)
def test_write_outcome(kind: str, reply: Reply, expected: tuple[str, Any]) -> None:
    assert write_outcome(kind, reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200, body={"value": "a", "version": 2}), ("ok", ("a", 2))),
        (Reply(404, "Configuration not found"), ("ok", None)),
        (Reply(404, "Namespace not found"), ("fail", None)),
        (Reply(503, "No leader available"), ("fail", None)),
        (Reply(504, "Read timed out"), ("fail", None)),
        (Reply(0, error="timeout"), ("info", None)),
        (Reply(0, error="refused"), ("fail", None)),
    ],
)
def test_read_outcome(reply: Reply, expected: tuple[str, Any]) -> None:
    assert read_outcome(reply) == expected


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _workload(fake: FakeConfman, **cfg: Any) -> Workload:
    w = Workload(fake.urls, "key", WorkloadConfig(**{"timeout": 1.0, "clients": 2, **cfg}))
    return w


async def _with_session(w: Workload, body: Any) -> Any:
    async with make_session() as session:
        w._session = session
        try:
            return await body()
        finally:
            w._session = None


def test_redirect_keeps_method_body_and_conditional_headers() -> None:
    async def main() -> None:
        async with FakeConfman(3) as fake:
            fake.namespaces.add("ns")
            fake.entries[("ns", "k")] = ("old", 3)
            w = _workload(fake)
            status, out = await _with_session(
                w, lambda: w.mutate(0, fake.urls[2], "ns", "cas", "new", 3)
            )
            assert (status, out) == ("ok", 4)
            first, second = fake.seen
            assert (first.node, second.node) == (2, 0)
            assert second.method == "PUT" and second.body == {"value": "new"}
            assert second.headers["If-Match"] == '"3"'
            assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
            assert w.stats.redirects == 1
            (op,) = w.recorder.history()
            assert op.input == ("ns/k", 3, "new") and op.output == 4
            assert w.meta[0]["node"] == fake.urls[0]

    _run(main())


def test_recording_rules_against_a_fake_server() -> None:
    async def main() -> list[Operation]:
        async with FakeConfman(2) as fake:
            fake.namespaces.add("ns")
            w = _workload(fake, timeout=0.3)
            leader, follower = fake.urls

            async def script() -> None:
                await w.read(0, follower, "ns", "linearizable")  # absent: ok None
                await w.mutate(0, leader, "ns", "write", "v1")  # ok 1
                await w.mutate(0, follower, "ns", "cas", "v2", 7)  # 412: ok False
                await w.mutate(0, leader, "ns", "cas", "v3", None)  # exists: ok False
                fake.script.append(Canned(503, "No leader available", method="PUT"))
                await w.mutate(0, leader, "ns", "write", "v4")  # fail
                fake.script.append(Canned(503, "Replication timed out", apply=True))
                await w.mutate(0, follower, "ns", "write", "v5")  # info, applied as 2
                fake.script.append(Canned(delay=1.0, method="PUT"))
                await w.mutate(0, leader, "ns", "write", "v6")  # client timeout: info
                fake.script.append(Canned(drop=True, apply=True, method="DELETE"))
                await w.mutate(0, leader, "ns", "delete")  # connection lost: info
                await w.mutate(0, leader, "ns", "delete")  # absent now: ok False
                fake.script.append(Canned(500, "Internal server error", method="PUT"))
                await w.mutate(0, leader, "ns", "write", "v7")  # info, counted
                await w.read(0, leader, "ns", "lease")  # ok None
                fake.redirect_to = {0: 1, 1: 0}  # a redirect loop
                await w.mutate(0, leader, "ns", "write", "v8")  # fail

            await _with_session(w, script)
            assert w.stats.unexpected_5xx == Counter({(500, "Internal server error"): 1})
            assert check_http(w.stats).ok is False
            return w.recorder.history()

    history = _run(main())
    got = [
        (op.kind, op.input[-1] if op.kind != "read" else None, op.status, op.output)
        for op in history
    ]
    assert got == [
        ("read", None, "ok", None),
        ("write", "v1", "ok", 1),
        ("cas", "v2", "ok", False),
        ("cas", "v3", "ok", False),
        ("write", "v4", "fail", None),
        ("write", "v5", "info", None),
        ("write", "v6", "info", None),
        ("delete", "ns/k", "info", None),
        ("delete", "ns/k", "ok", False),
        ("write", "v7", "info", None),
        ("read", None, "ok", None),
        ("write", "v8", "fail", None),
    ]
    assert all(op.ret is None for op in history if op.status == "info")
    assert check_linearizable(history, timeout=10)[0].ok is True


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_refused_connection_is_a_definite_failure() -> None:
    async def main() -> tuple[Any, ...]:
        w = Workload([_closed_port()], "key", WorkloadConfig(timeout=1.0))
        write = await _with_session(w, lambda: w.mutate(0, w.urls[0], "ns", "write", "x"))
        async with make_session() as s:
            reply = await send(s, "GET", w.urls[0], "health")
        return write, reply

    write, reply = _run(main())
    assert write == ("fail", None)
    assert reply.error == "refused"


def test_a_put_whose_connection_breaks_is_sent_once_and_indeterminate() -> None:
    """aiohttp would resend a PUT on a new connection when a kept-alive one breaks, making
    one recorded operation two attempts: the workload's session sends it once."""

    async def main() -> tuple[Reply, list[bytes]]:
        requests: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                requests.append(head.split(b" ")[0])
                if requests.count(b"PUT") == 1 and head.startswith(b"PUT"):
                    writer.transport.abort()  # "applied", then the connection breaks
                    return
                body = b'{"version": 1}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with server, make_session() as s:
            warm = await send(s, "GET", url, "health")
            assert warm.status == 200
            reply = await send(s, "PUT", url, "x", json_body={"value": "v"}, timeout=2.0)
        return reply, requests

    reply, requests = _run(main())
    assert requests == [b"GET", b"PUT"]
    assert reply.error == "connection"
    assert write_outcome("write", reply) == ("info", None)


def test_workload_loop_against_a_linearizable_fake() -> None:
    async def main() -> Workload:
        async with FakeConfman(3) as fake:
            w = Workload(
                fake.urls,
                "key",
                WorkloadConfig(clients=4, keys=2, seed=3, timeout=1.0, rotate_after=40),
                HistoryRecorder(),
            )
            await w.run(1.5)
            return w

    w = _run(main())
    history = w.recorder.history()
    kinds = Counter((op.kind, op.status) for op in history)
    levels = Counter(op.input[1] for op in history if op.kind == "read")
    assert min(kinds[(k, "ok")] for k in ("write", "cas", "delete", "read")) > 0
    assert set(levels) == {"local", "linearizable", "lease"}
    assert all(op.input[1] != "local" for op in checked_history(history) if op.kind == "read")
    assert w.stats.redirects > 0
    assert len(w.namespaces()) > 2, "slots moved to fresh namespaces"
    verdict, _ = check_linearizable(history, timeout=30)
    assert verdict.ok is True, verdict.details


def test_stale_reads_of_a_fake_are_caught() -> None:
    async def main() -> list[Operation]:
        async with FakeConfman(3, stale=True) as fake:
            w = Workload(fake.urls, "key", WorkloadConfig(clients=4, keys=1, seed=5, timeout=1.0))
            await w.run(1.0)
            return w.recorder.history()

    verdict, _ = check_linearizable(_run(main()), timeout=30)
    assert verdict.ok is False
    assert "not linearizable" in verdict.details
