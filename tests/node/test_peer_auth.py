"""Peer-link integrity: a machine on the path relays the handshake and then tampers.

`Relay` is a frame-aware TCP relay between a dialling transport and its peer. It forwards
the handshake untouched and hands every later client-to-server frame to a hook that may
drop, duplicate, reorder, replace or add frames. An attacker knows the wire format but not
the cluster secret, so forged frames carry a random tag of the right size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from confman.node import framing
from confman.node.codec import encode_message

from .helpers import (
    HOST,
    LOOPS,
    SECRET,
    Node,
    RawPeer,
    eventually,
    heartbeat,
    run,
    snapshot_msg,
    start_nodes,
    stop_nodes,
)

pytestmark = pytest.mark.timeout(60)

TAG = getattr(framing, "TAG_BYTES", 0)  # what an attacker must forge on each frame


def forged(kind: int, payload: bytes) -> bytes:
    """A frame as an attacker without the secret can build it."""
    return framing.HEADER.pack(len(payload) + 1 + TAG, kind) + payload + os.urandom(TAG)


class RelayConn:
    """One relayed connection: which one, its channel, frames seen after the handshake."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.channel = 0
        self.seen: list[bytes] = []  # client-to-server frames after the handshake, as sent


Hook = Callable[[RelayConn, bytes], list[bytes]]


class Relay:
    """A TCP relay to ``target`` that lets ``hook`` rewrite the client's post-handshake frames."""

    def __init__(self, target: tuple[str, int], hook: Hook | None = None) -> None:
        self.target = target
        self.hook: Hook = hook or (lambda _c, f: [f])
        self.conns: list[RelayConn] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, HOST, 0)
        return HOST, self.server.sockets[0].getsockname()[1]

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        conn = RelayConn(len(self.conns))
        self.conns.append(conn)
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        self._writers += [c_writer, s_writer]
        back = asyncio.create_task(self._pump(s_reader, c_writer))
        self._tasks.add(back)
        try:
            n = 0
            while True:
                head = await c_reader.readexactly(4)
                body = await c_reader.readexactly(int.from_bytes(head, "big"))
                frame = head + body
                n += 1
                if n == 1:  # HELLO: magic(8) | version(2) | channel(1) | ...
                    conn.channel = body[1 + 10]
                if n <= 2:  # HELLO and AUTH pass untouched
                    s_writer.write(frame)
                    continue
                out = self.hook(conn, frame)
                conn.seen.append(frame)
                s_writer.write(b"".join(out))
                await s_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (c_writer, s_writer):
                w.close()
            back.cancel()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        """Close every relayed connection (both sides)."""
        for w in self._writers:
            w.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def relayed_pair(hook: Hook) -> tuple[Node, Node, Relay]:
    """Nodes a and b, both members of each other's set; a reaches b through a relay."""
    nodes = await start_nodes(("a", "b"))
    a, b = nodes["a"], nodes["b"]
    relay = Relay(b.addr, hook)
    a.t.update_peers({"b": await relay.start()})
    return a, b, relay


def refused(node: Node, reason: str) -> int:
    return int(getattr(node.t, "refused", {}).get(reason, 0))


def commits(node: Node) -> list[int]:
    return [m.commit for m in node.inbox]


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_frame_injected_after_a_relayed_handshake_is_rejected(loop_kind: str) -> None:
    def inject(conn: RelayConn, frame: bytes) -> list[bytes]:
        if conn.index == 0 and not conn.seen:
            return [frame, forged(framing.K_MSG, encode_message(heartbeat("a", "b", 666)))]
        return [frame]

    async def main() -> None:
        a, b, relay = await relayed_pair(inject)
        try:
            a.t.send([heartbeat("a", "b", 1)])
            await eventually(lambda: 1 in commits(b) and len(relay.conns) >= 1, "first beat")
            await eventually(lambda: refused(b, "mac") == 1 or 666 in commits(b), "verdict")
            assert 666 not in commits(b)
            assert refused(b, "mac") == 1
            await eventually(lambda: "b" in a.unreachable, "a saw the connection fail")
            for n in range(2, 40):  # the link recovers on a fresh connection
                a.t.send([heartbeat("a", "b", n)])
                await asyncio.sleep(0.01)
                if n in commits(b):
                    break
            assert len(relay.conns) == 2 and commits(b)[-1] > 1
            assert 666 not in commits(b)
        finally:
            await relay.stop()
            await stop_nodes([a, b])

    run(loop_kind, main)


@pytest.mark.parametrize("attack", ["replay", "reorder", "drop"])
def test_replayed_reordered_or_dropped_frame_is_rejected(attack: str) -> None:
    held: list[bytes] = []

    def tamper(conn: RelayConn, frame: bytes) -> list[bytes]:
        if conn.index != 0:
            return [frame]
        i = len(conn.seen)
        if attack == "replay" and i == 0:
            return [frame, frame]
        if attack == "reorder" and i == 0:
            held.append(frame)
            return []
        if attack == "reorder" and i == 1:
            return [frame, *held]
        if attack == "drop" and i == 0:
            return []
        return [frame]

    async def main() -> None:
        a, b, relay = await relayed_pair(tamper)
        try:
            a.t.send([heartbeat("a", "b", n) for n in (1, 2, 3)])  # the relay splits frames
            await eventually(lambda: refused(b, "mac") == 1 or len(b.inbox) >= 2, "verdict")
            got = commits(b)
            assert refused(b, "mac") == 1, got
            assert got in ([], [1]), got  # only what came in order, each once
        finally:
            await relay.stop()
            await stop_nodes([a, b])

    run("asyncio", main)


def test_frame_replayed_from_another_connection_is_rejected() -> None:
    """A frame recorded on one connection is worthless on the next (other nonces, keys)."""
    recorded: list[bytes] = []

    def splice(conn: RelayConn, frame: bytes) -> list[bytes]:
        if conn.index == 0:
            recorded.append(frame)
            return [frame]
        if conn.index == 1 and not conn.seen:
            return [recorded[0]]  # seq 0 of connection 0 in place of seq 0 here
        return [frame]

    async def main() -> None:
        a, b, relay = await relayed_pair(splice)
        try:
            a.t.send([heartbeat("a", "b", 1)])
            await eventually(lambda: commits(b) == [1], "first beat")
            relay.cut()
            await eventually(lambda: "b" in a.unreachable, "a noticed the cut")
            for n in range(2, 100):
                a.t.send([heartbeat("a", "b", n)])
                await asyncio.sleep(0.01)
                if len(relay.conns) >= 2 and relay.conns[1].seen:
                    break
            await eventually(lambda: refused(b, "mac") == 1 or len(b.inbox) > 1, "verdict")
            assert commits(b).count(1) == 1
            assert refused(b, "mac") == 1
        finally:
            await relay.stop()
            await stop_nodes([a, b])

    run("asyncio", main)


def test_tampered_snapshot_stream_is_rejected(tmp_path: Path) -> None:
    """The stream's CRC is no defence: the relay rewrites a chunk and recomputes it."""
    src = tmp_path / "snapshot.bin"
    src.write_bytes(os.urandom(3 << 20))
    crc = [0]

    def rewrite(conn: RelayConn, frame: bytes) -> list[bytes]:
        if conn.channel != framing.CH_SNAPSHOT:
            return [frame]
        kind = frame[4]
        body = bytearray(frame[5 : len(frame) - TAG])
        if kind == framing.K_SNAP_CHUNK:
            if not conn.seen[1:]:  # the first chunk (seen holds the header so far)
                body[100] ^= 0xFF
            crc[0] = zlib.crc32(body, crc[0])
        elif kind == framing.K_SNAP_END:
            body[8:12] = crc[0].to_bytes(4, "big")
        else:
            return [frame]
        return [frame[:5] + bytes(body) + frame[len(frame) - TAG :]]

    async def main() -> None:
        a, b, relay = await relayed_pair(rewrite)
        a.snapshot_path = str(src)
        b.sink_dir = tmp_path
        try:
            a.t.send([snapshot_msg("a", "b")])
            await eventually(lambda: bool(a.snap_status), "snapshot status")
            assert a.snap_status == [("b", False)]
            assert [m for m in b.inbox if m.snapshot is not None] == []
            assert refused(b, "mac") == 1
        finally:
            await relay.stop()
            await stop_nodes([a, b])

    run("asyncio", main)


def test_intruder_id_is_refused_even_with_the_secret() -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"))
        a, b = nodes["a"], nodes["b"]
        intruder = Node("intruder")  # knows the secret, is not a member
        await intruder.t.start()
        intruder.t.update_peers({"a": a.addr})
        try:
            raw = await RawPeer.connect(a.t.port)
            assert not await raw.handshake("intruder", "a", SECRET)
            assert await raw.closed_by_peer() == b""
            await raw.close()
            intruder.t.send([heartbeat("intruder", "a", 1)])
            await eventually(lambda: "a" in intruder.unreachable, "intruder refused")
            assert a.inbox == []
            assert refused(a, "non_member") == 2
            b.t.send([heartbeat("b", "a", 1)])  # the member is still welcome
            await eventually(lambda: commits(a) == [1], "member's beat")
        finally:
            await stop_nodes([a, b, intruder])

    run("asyncio", main)


def test_membership_is_checked_against_the_current_set(loop_kind: str) -> None:
    """A peer removed by ``update_peers`` is cut off and refused; re-added, it is welcome."""

    async def main() -> None:
        nodes = await start_nodes(("a", "b"))
        a, b = nodes["a"], nodes["b"]
        try:
            b.t.send([heartbeat("b", "a", 1)])
            await eventually(lambda: commits(a) == [1], "b's beat while a member")
            a.t.update_peers({})  # b removed from a's membership
            await eventually(lambda: "a" in b.unreachable, "b's connection closed")
            for n in range(2, 20):
                b.t.send([heartbeat("b", "a", n)])
                await asyncio.sleep(0.02)
            assert commits(a) == [1]
            assert refused(a, "non_member") >= 1
            a.t.update_peers({"b": b.addr})
            for n in range(20, 200):
                b.t.send([heartbeat("b", "a", n)])
                await asyncio.sleep(0.01)
                if len(a.inbox) > 1:
                    break
            assert len(a.inbox) > 1
        finally:
            await stop_nodes([a, b])

    run(loop_kind, main)


def test_frame_mac_is_gmac_with_kind_and_sequence_in_the_nonce() -> None:
    key = os.urandom(32)
    mac = framing.FrameMac(key)
    gcm = AESGCM(key)
    frames = [(5, b"x" * 300), (5, b""), (7, os.urandom(5000)), (5, b"x" * 300)]
    tags = []
    for seq, (kind, payload) in enumerate(frames):
        nonce = bytes((kind, 0, 0, 0)) + seq.to_bytes(8, "big")
        tags.append(mac.tag(kind, memoryview(payload)))
        assert tags[-1] == gcm.encrypt(nonce, b"", payload) and len(tags[-1]) == 16
    assert mac.seq == 4 and tags[0] != tags[3]  # same frame, next position: another tag
    assert framing.FrameMac(key).tag(7, b"x" * 300) != tags[0]  # another kind
    with pytest.raises(ValueError):
        framing.FrameMac(key[:16])


def test_session_keys_are_per_direction_and_per_connection() -> None:
    hello = framing.Hello(framing.PROTOCOL_VERSION, framing.CH_RAFT, "a", "b", b"n" * 32)
    c_rx, c_tx = framing.session_macs(SECRET, hello, b"s" * 32, server=False)
    s_rx, s_tx = framing.session_macs(SECRET, hello, b"s" * 32, server=True)
    assert c_tx.tag(5, b"m") == s_rx.tag(5, b"m") and s_tx.tag(5, b"m") == c_rx.tag(5, b"m")
    tags = {framing.session_macs(SECRET, hello, b"s" * 32, server=False)[1].tag(5, b"m")}
    for h, nonce, secret in [
        (replace(hello, nonce=b"o" * 32), b"s" * 32, SECRET),
        (hello, b"t" * 32, SECRET),
        (replace(hello, client_id="c"), b"s" * 32, SECRET),
        (replace(hello, channel=framing.CH_SNAPSHOT), b"s" * 32, SECRET),
        (hello, b"s" * 32, SECRET + b"!"),
    ]:
        tags.add(framing.session_macs(secret, h, nonce, server=False)[1].tag(5, b"m"))
    tags.add(framing.session_macs(SECRET, hello, b"s" * 32, server=True)[1].tag(5, b"m"))
    assert len(tags) == 7


def test_mac_failure_is_logged_without_the_frame(caplog: pytest.LogCaptureFixture) -> None:
    secret_looking = b"API-KEY-confman_admin_abcdef"

    def inject(conn: RelayConn, frame: bytes) -> list[bytes]:
        return [frame, forged(framing.K_MSG, secret_looking)] if not conn.seen else [frame]

    async def main() -> None:
        a, b, relay = await relayed_pair(inject)
        try:
            a.t.send([heartbeat("a", "b", 1)])
            await eventually(lambda: refused(b, "mac") == 1, "MAC failure")
        finally:
            await relay.stop()
            await stop_nodes([a, b])

    with caplog.at_level(logging.DEBUG, logger="confman"):
        run("asyncio", main)
    failures = [r for r in caplog.records if "MAC check" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert "frame 1 (kind 5)" in failures[0].getMessage()
    assert not any("API-KEY" in r.getMessage() for r in caplog.records)


def test_runtime_refuses_an_intruder_and_counts_it(tmp_path: Path) -> None:
    """The runtime's membership (its config, then applied changes) is the transport's peer set."""
    from confman.node.config import Member, NodeConfig
    from confman.node.runtime import Runtime

    cfg = NodeConfig(
        node_id="solo",
        data_dir=tmp_path / "solo",
        members=(
            Member("solo", (HOST, 1), "http://127.0.0.1:1/"),
            Member("peer", (HOST, 1), "http://127.0.0.1:2/"),
        ),
        cluster_secret=SECRET,
        http_listen=(HOST, 0),
        http_advertise="http://127.0.0.1:1/",
        raft_listen=(HOST, 0),
    )

    async def main() -> None:
        rt = Runtime(cfg)
        rt.fatal = lambda code: pytest.fail(f"runtime exit {code}")
        await rt.start()
        try:
            for client, welcome in (("intruder", False), ("peer", True)):
                raw = await RawPeer.connect(rt.transport.port)
                assert await raw.handshake(client, "solo", SECRET) is welcome
                await raw.close()
            sample = rt.metrics.registry.get_sample_value
            assert sample("confman_peer_refused_total", {"reason": "non_member"}) == 1.0
            assert rt.transport.refused == {"non_member": 1}
        finally:
            await rt.stop()

    run("asyncio", main)
