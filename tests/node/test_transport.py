"""Peer transport over real sockets on 127.0.0.1, on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from confman.node import framing
from confman.node.codec import encode_message
from confman.raft.types import Message, MessageType

from .helpers import (
    HOST,
    LOOPS,
    SECRET,
    Node,
    RawPeer,
    append,
    eventually,
    heartbeat,
    open_fds,
    oversize_header,
    run,
    snapshot_msg,
    start_nodes,
    start_snapshot_pair,
    stop_nodes,
)

pytestmark = pytest.mark.timeout(60)


class MacPeer(RawPeer):
    """A `RawPeer` that, once the handshake succeeded, tags and checks frames as a node does."""

    rx: framing.FrameMac | None = None
    tx: framing.FrameMac | None = None

    @classmethod
    async def connect(cls, port: int) -> MacPeer:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def handshake(
        self, client: str, server: str, secret: bytes = SECRET, channel: int = framing.CH_RAFT
    ) -> bool:
        if not await super().handshake(client, server, secret, channel):
            return False
        self.rx, self.tx = framing.session_macs(secret, self.hello, self.nonce, server=False)
        return True

    async def send_frame(self, kind: int, payload: bytes = b"") -> None:
        if self.tx is None:
            await super().send_frame(kind, payload)
            return
        tag = self.tx.tag(kind, payload)
        head = framing.HEADER.pack(len(payload) + 1 + framing.TAG_BYTES, kind)
        await self.send_raw(head + payload + tag)

    async def read_frame(self) -> tuple[int, bytes]:
        kind, body = await super().read_frame()
        if self.rx is None:
            return kind, body
        payload, tag = body[: -framing.TAG_BYTES], body[-framing.TAG_BYTES :]
        assert self.rx.tag(kind, payload) == tag, "the node's frame failed its MAC check"
        return kind, payload


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_delivery_and_order_between_three_nodes(loop_kind: str) -> None:
    ids = ("a", "b", "c")

    async def main() -> None:
        nodes = await start_nodes(ids)
        try:
            sent: dict[tuple[str, str], list[Message]] = {}
            for batch in range(10):
                for frm in ids:
                    msgs = []
                    for to in ids:
                        if to == frm:
                            continue
                        for i in range(50):
                            n = batch * 50 + i
                            m = append(frm, to, n) if i % 3 else heartbeat(frm, to, n)
                            msgs.append(m)
                            sent.setdefault((frm, to), []).append(m)
                    nodes[frm].t.send(msgs)
                await asyncio.sleep(0)  # let some batches go out between sends
            await eventually(
                lambda: all(len(n.inbox) == 1000 for n in nodes.values()), "all messages"
            )
            for (frm, to), msgs in sent.items():
                assert nodes[to].from_(frm) == msgs  # complete, in order, intact
            for frm in ids:
                for st in nodes[frm].t.stats().values():
                    assert st["sent"] == 500 and st["received"] == 500
                    assert st["connected"] and st["dropped"] == 0 and st["queued"] == 0
                assert nodes[frm].unreachable == []
        finally:
            await stop_nodes(nodes.values())

    run(loop_kind, main)


def test_reconnect_after_peer_restart(loop_kind: str) -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"))
        a, b = nodes["a"], nodes["b"]
        b2: Node | None = None
        try:
            a.t.send([heartbeat("a", "b", 1)])
            await eventually(lambda: len(b.inbox) == 1, "first delivery")
            port = b.t.port
            await b.t.stop()
            await eventually(lambda: "b" in a.unreachable, "on_unreachable after b stopped")
            a.t.send([heartbeat("a", "b", 2)])  # dropped by failing dials
            await eventually(lambda: a.t.stats()["b"]["failures"] >= 2, "a failed dial")

            b2 = Node("b", port=port)
            await b2.t.start()
            b2.t.update_peers({"a": a.addr})
            n = 3
            deadline = asyncio.get_running_loop().time() + 10
            while not b2.inbox:  # Raft resends; so do we, until one gets through
                assert asyncio.get_running_loop().time() < deadline, "no delivery after restart"
                a.t.send([heartbeat("a", "b", n)])
                n += 1
                await eventually(lambda: bool(b2.inbox) or not a.t.stats()["b"]["queued"], "try")
                await asyncio.sleep(0)
            st = a.t.stats()["b"]
            assert st["connected"] and st["reconnects"] == 1
            # on_unreachable at most once per failure (no overflow happened here)
            await asyncio.sleep(0)
            assert a.unreachable.count("b") == st["failures"]
            # and b2 can answer on its own connection
            b2.t.send([heartbeat("b", "a", 99)])
            await eventually(lambda: any(m.commit == 99 for m in a.inbox), "reply from b2")
        finally:
            await stop_nodes([a, b] + ([b2] if b2 else []))

    run(loop_kind, main)


def test_wrong_secret_gets_nothing_both_ways() -> None:
    async def main() -> None:
        nodes = await start_nodes(("a",))
        a = nodes["a"]
        m = Node("m", secret=b"not the cluster secret at all")
        await m.t.start()
        a.t.update_peers({"m": m.addr})
        m.t.update_peers({"a": a.addr})
        try:
            a.t.send([heartbeat("a", "m", 1)])
            m.t.send([heartbeat("m", "a", 1)])
            await eventually(lambda: "m" in a.unreachable and "a" in m.unreachable, "failures")
            assert a.inbox == [] and m.inbox == []
            assert not a.t.stats()["m"]["connected"] and not m.t.stats()["a"]["connected"]

            # by hand: a bad proof gets a nonce and then the connection closes, nothing else
            raw = await RawPeer.connect(a.t.port)
            hello = framing.Hello(framing.PROTOCOL_VERSION, framing.CH_RAFT, "m", "a", b"n" * 32)
            await raw.send_frame(framing.K_HELLO, framing.encode_hello(hello))
            kind, nonce = await raw.read_frame()
            assert kind == framing.K_CHALLENGE and len(nonce) == 32
            wrong = framing.proof(b"guess", b"client", hello, nonce)
            await raw.send_frame(framing.K_AUTH, wrong)
            await raw.send_message(heartbeat("m", "a", 2))
            assert await raw.closed_by_peer() == b""
            await raw.close()
            assert a.inbox == []
        finally:
            await stop_nodes([a, m])

    run("asyncio", main)


def test_client_refuses_an_impostor_server() -> None:
    """A server that cannot prove the secret receives no message, and never the secret."""
    received = bytearray()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.extend(await reader.readexactly(5))
            length = int.from_bytes(received[:4], "big")
            received.extend(await reader.readexactly(length - 1))
            writer.write(framing.frame(framing.K_CHALLENGE, os.urandom(32)))
            received.extend(await reader.readexactly(5 + 32))  # the client's proof
            writer.write(framing.frame(framing.K_WELCOME, os.urandom(32)))  # a bogus proof
            received.extend(await reader.read())  # until the client closes
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a = Node("a")
        await a.t.start()
        a.t.update_peers({"imp": ("127.0.0.1", port)})
        try:
            a.t.send([heartbeat("a", "imp", 1)])
            await eventually(lambda: "imp" in a.unreachable, "handshake failure reported")
            await eventually(lambda: len(received) >= 5 + 32 + 5 + 32, "impostor saw the proof")
        finally:
            await a.t.stop()
            server.close()
            await server.wait_closed()
        assert bytes(received[:5])[4] == framing.K_HELLO
        assert framing.HEADER.pack(33, framing.K_AUTH) in received
        assert SECRET not in received
        # nothing after the AUTH frame: the client closed instead of sending messages
        auth_at = received.index(framing.HEADER.pack(33, framing.K_AUTH))
        assert len(received) == auth_at + 5 + 32

    run("asyncio", main)


def test_garbage_and_oversize_frames_are_disconnected(loop_kind: str) -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"), max_frame_bytes=2 << 20)
        a, b = nodes["a"], nodes["b"]
        try:
            b.t.send([heartbeat("b", "a", 0)])
            await eventually(lambda: len(a.inbox) == 1, "initial traffic")

            garbage = await RawPeer.connect(a.t.port)
            await garbage.send_raw(b"\x00\x00\x00\x09GET / HTTP/1.1\r\n" + os.urandom(4096))
            assert await garbage.closed_by_peer() == b""

            huge = await RawPeer.connect(a.t.port)
            await huge.send_raw(oversize_header(0xFFFFFFFF))
            assert await huge.closed_by_peer() == b""

            # authenticated, then a frame over max_frame_bytes (plus its tag)
            a.t.update_peers({"b": b.addr, "c": (HOST, 1)})
            big = await MacPeer.connect(a.t.port)
            assert await big.handshake("c", "a")
            await big.send_raw(oversize_header((2 << 20) + framing.TAG_BYTES + 1))
            assert await big.closed_by_peer() == b""

            # authenticated, then a well-framed but undecodable message
            junk = await MacPeer.connect(a.t.port)
            assert await junk.handshake("c", "a")
            await junk.send_frame(framing.K_MSG, b"\xc1 not msgpack")
            assert await junk.closed_by_peer() == b""

            for raw in (garbage, huge, big, junk):
                await raw.close()
            # the peers never noticed
            b.t.send([heartbeat("b", "a", n) for n in range(1, 101)])
            a.t.send([heartbeat("a", "b", n) for n in range(1, 101)])
            await eventually(lambda: len(a.inbox) == 101 and len(b.inbox) == 100, "traffic")
            assert [m.commit for m in a.inbox] == list(range(101))
            assert a.unreachable == [] and b.unreachable == []
            assert a.t.stats()["b"]["reconnects"] == 0 and b.t.stats()["a"]["reconnects"] == 0
        finally:
            await stop_nodes(nodes.values())

    run(loop_kind, main)


def test_handshake_timeout_and_misaddressed_hello() -> None:
    async def main() -> None:
        a = Node("a", handshake_timeout=0.2)
        await a.t.start()
        try:
            silent = await RawPeer.connect(a.t.port)
            assert await silent.closed_by_peer(timeout=5) == b""
            wrong = await RawPeer.connect(a.t.port)
            hello = framing.Hello(framing.PROTOCOL_VERSION, framing.CH_RAFT, "c", "b", b"n" * 32)
            await wrong.send_frame(framing.K_HELLO, framing.encode_hello(hello))
            assert await wrong.closed_by_peer() == b""  # addressed to b: no challenge
            for raw in (silent, wrong):
                await raw.close()
        finally:
            await a.t.stop()

    run("asyncio", main)


def test_proof_binds_every_transcript_field() -> None:
    hello = framing.Hello(framing.PROTOCOL_VERSION, framing.CH_RAFT, "a", "b", b"n" * 32)
    base = framing.proof(SECRET, b"client", hello, b"s" * 32)
    variants = [
        framing.proof(SECRET, b"server", hello, b"s" * 32),
        framing.proof(SECRET, b"client", replace(hello, client_id="c"), b"s" * 32),
        framing.proof(SECRET, b"client", replace(hello, server_id="c"), b"s" * 32),
        framing.proof(SECRET, b"client", replace(hello, channel=framing.CH_SNAPSHOT), b"s" * 32),
        framing.proof(SECRET, b"client", replace(hello, nonce=b"m" * 32), b"s" * 32),
        framing.proof(SECRET, b"client", hello, b"t" * 32),
        framing.proof(SECRET + b"x", b"client", hello, b"s" * 32),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert framing.decode_hello(framing.encode_hello(hello)) == hello
    good = framing.encode_hello(hello)
    v1 = framing.encode_hello(replace(hello, version=1))  # before frames carried MACs
    for bad in (b"", b"x" * 60, good[:-1], good + b"!", b"X" + good[1:], v1):
        with pytest.raises(framing.HandshakeError):
            framing.decode_hello(bad)


def test_spoofed_frm_is_dropped() -> None:
    async def main() -> None:
        a = Node("a")
        await a.t.start()
        a.t.update_peers({"c": (HOST, 1)})
        try:
            raw = await MacPeer.connect(a.t.port)
            assert await raw.handshake("c", "a")
            await raw.send_message(heartbeat("b", "a", 1))  # claims to be b
            await raw.send_message(heartbeat("c", "z", 2))  # addressed to someone else
            await raw.send_message(snapshot_msg("c", "a"))  # snapshots only via a stream
            await raw.send_message(heartbeat("c", "a", 3))
            await eventually(lambda: len(a.inbox) == 1, "the honest message")
            assert a.inbox == [heartbeat("c", "a", 3)]
            await raw.close()
            assert a.t.stats()["c"]["rejected"] == 3 and a.t.stats()["c"]["received"] == 1
        finally:
            await a.t.stop()

    run("asyncio", main)


def test_snapshot_streams_while_heartbeats_flow(loop_kind: str, tmp_path: Path) -> None:
    size = 20 << 20

    async def main() -> None:
        a, b, src = await start_snapshot_pair(tmp_path, size)
        try:
            a.t.send([heartbeat("a", "b", 0)])
            await eventually(lambda: len(b.inbox) == 1, "connection up")
            a.t.send([snapshot_msg("a", "b")])
            await eventually(lambda: bool(b.sinks), "stream started")
            # heartbeat pump: each one waits for the previous to arrive
            progress: list[int] = []  # bytes in the sink when each heartbeat arrived
            for n in range(1, 10_000):
                if a.snap_status:
                    break
                last = heartbeat("a", "b", n)
                a.t.send([last])

                def arrived(last: Message = last) -> bool:
                    return b.inbox[-1] == last or bool(a.snap_status)

                await eventually(arrived, "heartbeat")
                if b.inbox[-1] == last:
                    progress.append(b.sinks[0].written)
            assert a.snap_status == [("b", True)]
            during = [p for p in progress if p < size]
            assert len(during) >= 3, f"heartbeats waited behind the snapshot: {progress}"
            assert during == sorted(during) and during[-1] > during[0]  # stream advanced too
            snap = [m for m in b.inbox if m.type is MessageType.SNAPSHOT]
            assert len(snap) == 1 and snap[0].snapshot is not None
            assert snap[0].snapshot.data == str(b.sinks[0].path).encode()
            assert snap[0].snapshot.meta.index == 100 and snap[0].frm == "a"
            sent_hash = hashlib.sha256(src.read_bytes()).digest()
            assert hashlib.sha256(b.sinks[0].path.read_bytes()).digest() == sent_hash
            beats = [m.commit for m in b.inbox if m.type is MessageType.HEARTBEAT]
            assert beats == sorted(beats)
            assert not a.t.stats()["b"]["snapshot_in_flight"]
        finally:
            await stop_nodes([a, b])

    run(loop_kind, main)


@pytest.mark.parametrize("failure", ["verify", "write", "no-file", "receiver-gone"])
def test_failed_snapshot_reports_false(failure: str, tmp_path: Path) -> None:
    async def main() -> None:
        a, b, src = await start_snapshot_pair(tmp_path, 3 << 20)
        if failure == "no-file":
            a.snapshot_path = None
        b.sink_fail = failure if failure in ("verify", "write") else None
        try:
            if failure == "receiver-gone":
                await b.t.stop()
            a.t.send([snapshot_msg("a", "b")])
            await eventually(lambda: bool(a.snap_status), "snapshot status")
            assert a.snap_status == [("b", False)]
            assert [m for m in b.inbox if m.type is MessageType.SNAPSHOT] == []
            if failure == "write":
                await eventually(lambda: b.sinks[0].aborted, "sink aborted")
                assert not b.sinks[0].finished
            if failure == "verify":
                assert b.sinks[0].finished and not b.sinks[0].aborted
            # the peer is still reachable for raft messages, and a new transfer may start
            if failure != "receiver-gone":
                a.t.send([heartbeat("a", "b", 1)])
                await eventually(lambda: len(b.inbox) == 1, "heartbeat after the failure")
                b.sink_fail = None
                a.snapshot_path = str(src)
                a.t.send([snapshot_msg("a", "b")])
                await eventually(lambda: len(a.snap_status) == 2, "second transfer")
                assert a.snap_status[1] == ("b", True)
        finally:
            await stop_nodes([a, b])

    run("asyncio", main)


def test_one_snapshot_per_peer_at_a_time(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, _ = await start_snapshot_pair(tmp_path, 4 << 20)
        try:
            a.t.send([snapshot_msg("a", "b", 100), snapshot_msg("a", "b", 200)])
            await eventually(lambda: bool(a.snap_status), "snapshot status")
            assert a.snap_status == [("b", True)]
            snaps = [m for m in b.inbox if m.type is MessageType.SNAPSHOT]
            assert [m.snapshot.meta.index for m in snaps if m.snapshot] == [100]
            assert len(b.sinks) == 1
        finally:
            await stop_nodes([a, b])

    run("asyncio", main)


def test_stop_leaves_no_tasks_or_sockets(loop_kind: str, tmp_path: Path) -> None:
    src = tmp_path / "snapshot.bin"
    src.write_bytes(os.urandom(8 << 20))

    async def main() -> None:
        base_fds = open_fds(tmp_path)
        me = asyncio.current_task()
        nodes = await start_nodes(("a", "b", "c"))
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        a.snapshot_path = str(src)
        b.sink_dir = tmp_path
        for n in nodes.values():
            n.t.send([append(n.id, to, 1) for to in nodes if to != n.id])
        await eventually(lambda: all(len(n.inbox) == 2 for n in nodes.values()), "traffic")
        a.t.send([snapshot_msg("a", "b")])
        await eventually(lambda: bool(b.sinks) and b.sinks[0].written > 0, "snapshot midway")
        half = await RawPeer.connect(c.t.port)  # an unauthenticated connection, left open
        a.t.update_peers({**{i: n.addr for i, n in nodes.items()}, "gone": ("127.0.0.1", 1)})
        a.t.send([heartbeat("a", "gone", 1)])  # a peer in backoff
        assert {t for t in asyncio.all_tasks() if t is not me}
        for n in nodes.values():
            await n.t.stop()
        assert {t for t in asyncio.all_tasks() if t is not me} == set()
        assert await half.closed_by_peer() == b""
        await half.close()
        await eventually(lambda: open_fds(tmp_path) == base_fds, f"fds back to {base_fds}")
        assert a.snap_status == []  # no callbacks after stop
        await eventually(lambda: b.sinks[0].aborted, "receiving sink aborted")
        for n in nodes.values():
            n.t.send([heartbeat(n.id, "a", 2)])  # ignored after stop
            await n.t.stop()  # idempotent
        assert {t for t in asyncio.all_tasks() if t is not me} == set()

    run(loop_kind, main)


def test_queue_overflow_drops_oldest_non_essential_and_reports() -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"), queue_limit=10)
        a, b = nodes["a"], nodes["b"]
        try:
            vote = Message(MessageType.VOTE, to="b", frm="a", term=5)
            # all in one call: the lazy connection cannot be up before it returns
            a.t.send([vote] + [append("a", "b", n) for n in range(30)])
            st = a.t.stats()["b"]
            assert st["queued"] == 10 and st["dropped"] == 21
            await eventually(lambda: len(b.inbox) == 10, "the kept messages")
            assert b.inbox[0] == vote
            assert [m.index for m in b.inbox[1:]] == list(range(21, 30))
            assert a.unreachable == ["b"]  # reported once for the overflowing batch
            # the same when everything queued is essential: oldest goes
            votes = [replace(vote, term=t) for t in range(12)]
            a.t.send(votes)
            assert a.t.stats()["b"]["dropped"] == 23
            await eventually(lambda: len(b.inbox) == 20, "the kept votes")
            assert [m.term for m in b.inbox[10:]] == list(range(2, 12))
            await eventually(lambda: len(a.unreachable) == 2, "second report")
            assert a.unreachable == ["b", "b"]
        finally:
            await stop_nodes(nodes.values())

    run("asyncio", main)


def test_update_peers_moves_and_removes(loop_kind: str) -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"))
        a, b = nodes["a"], nodes["b"]
        b2 = Node("b")
        await b2.t.start()
        b2.t.update_peers({"a": a.addr})
        try:
            a.t.send([heartbeat("a", "b", 1)])
            await eventually(lambda: len(b.inbox) == 1, "delivery to b")
            a.t.update_peers({"b": b2.addr})  # b moved
            a.t.send([heartbeat("a", "b", 2)])
            await eventually(lambda: len(b2.inbox) == 1, "delivery to the moved b")
            assert len(b.inbox) == 1 and a.unreachable == []
            a.t.update_peers({})
            assert a.t.stats() == {}
            a.t.send([heartbeat("a", "b", 3)])
            await eventually(lambda: a.unreachable == ["b"], "unknown peer reported")
            assert len(b2.inbox) == 1
        finally:
            await stop_nodes([a, b, b2])

    run(loop_kind, main)


def test_send_before_start_is_flushed_on_start() -> None:
    async def main() -> None:
        b = Node("b")
        await b.t.start()
        b.t.update_peers({"a": (HOST, 1)})  # a must be a member of b's cluster
        a = Node("a")
        a.t.update_peers({"b": b.addr})
        a.t.send([heartbeat("a", "b", 1)])
        await a.t.start()
        try:
            await eventually(lambda: len(b.inbox) == 1, "queued message delivered")
        finally:
            await stop_nodes([a, b])

    run("asyncio", main)


def test_oversize_outbound_message_is_dropped_not_sent() -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"), max_frame_bytes=(1 << 20) + 64)
        a, b = nodes["a"], nodes["b"]
        try:
            big = append("a", "b", 1, entries=4, size=400_000)
            assert len(encode_message(big)) > (1 << 20) + 64
            a.t.send([big, heartbeat("a", "b", 2)])
            await eventually(lambda: len(b.inbox) == 1, "the small message")
            assert b.inbox[0].type is MessageType.HEARTBEAT
            assert a.t.stats()["b"]["dropped"] == 1 and a.t.stats()["b"]["reconnects"] == 0
        finally:
            await stop_nodes(nodes.values())

    run("asyncio", main)


def test_on_message_exception_does_not_break_the_connection() -> None:
    async def main() -> None:
        nodes = await start_nodes(("a", "b"))
        a, b = nodes["a"], nodes["b"]

        def explode(msg: Message) -> None:
            if msg.commit == 1:
                raise RuntimeError("runtime bug")

        b.on_message_hook = explode
        try:
            a.t.send([heartbeat("a", "b", n) for n in range(3)])
            await eventually(lambda: len(b.inbox) == 3, "all three despite the exception")
            assert a.unreachable == [] and a.t.stats()["b"]["reconnects"] == 0
        finally:
            await stop_nodes(nodes.values())

    run("asyncio", main)


def test_snapshot_receiver_rejects_overrun_and_stalls(tmp_path: Path) -> None:
    async def main() -> None:
        b = Node("b", snapshot_timeout=0.3)
        b.sink_dir = tmp_path
        await b.t.start()
        b.t.update_peers({"a": (HOST, 1)})
        header = framing.K_SNAP_HEADER
        try:
            over = await MacPeer.connect(b.t.port)
            assert await over.handshake("a", "b", channel=framing.CH_SNAPSHOT)
            await over.send_frame(
                header, (10).to_bytes(8, "big") + encode_message(snapshot_msg("a", "b"))
            )
            await over.send_frame(framing.K_SNAP_CHUNK, b"x" * 20)  # more than announced
            assert await over.read_frame() == (framing.K_SNAP_ACK, b"\x00")
            assert await over.closed_by_peer() == b""
            await eventually(lambda: b.sinks[0].aborted, "sink aborted")

            stall = await MacPeer.connect(b.t.port)
            assert await stall.handshake("a", "b", channel=framing.CH_SNAPSHOT)
            await stall.send_frame(
                header, (100).to_bytes(8, "big") + encode_message(snapshot_msg("a", "b"))
            )
            await stall.send_frame(framing.K_SNAP_CHUNK, b"x" * 10)
            assert await stall.closed_by_peer() == b""  # after snapshot_timeout of silence
            assert b.sinks[1].aborted and not b.sinks[1].finished
            assert b.inbox == []
            for raw in (over, stall):
                await raw.close()
        finally:
            await b.t.stop()

    run("asyncio", main)
