"""Test harness for the peer transport: recording nodes, a raw peer, condition waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import uvloop

from confman.node import framing
from confman.node.codec import encode_message
from confman.node.peer_snapshot import FileSource, SnapshotSource
from confman.node.transport import PeerTransport
from confman.raft.types import Entry, Message, MessageType, Snapshot, SnapshotMeta

SECRET = b"correct horse battery staple 42"
LOOPS = ("asyncio", "uvloop")
HOST = "127.0.0.1"


def run(loop_kind: str, main: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Run ``main()`` on a fresh loop of the given kind with an overall deadline."""
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop

    async def guarded() -> Any:
        async with asyncio.timeout(timeout):
            return await main()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(guarded())


async def eventually(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait until ``pred()`` holds (polled each millisecond or so), or fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def open_fds(under: Path | None = None) -> int:
    """Open sockets of this process (and files below ``under``), from /proc/self/fd.

    uvloop keeps a reserve descriptor on /dev/null for its lifetime: not counted.
    """
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
        if target.startswith("socket:") or (under is not None and target.startswith(str(under))):
            count += 1
    return count


def heartbeat(frm: str, to: str, n: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=1, commit=n)


def append(frm: str, to: str, n: int, entries: int = 4, size: int = 300) -> Message:
    data = n.to_bytes(8, "big") * (size // 8)
    ents = tuple(Entry(1, n * entries + i, data=data) for i in range(entries))
    return Message(MessageType.APPEND, to=to, frm=frm, term=1, index=n, entries=ents)


def snapshot_msg(frm: str, to: str, index: int = 100) -> Message:
    snap = Snapshot(SnapshotMeta(index=index, term=2), data=b"local-ref-on-the-sender")
    return Message(MessageType.SNAPSHOT, to=to, frm=frm, term=2, snapshot=snap)


@dataclass
class FileSink:
    """A sink that writes to a file; ``fail`` = "write" or "verify" simulates failures."""

    path: Path
    msg: Message
    size: int
    fail: str | None = None
    written: int = 0
    finished: bool = False
    aborted: bool = False
    _file: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by finish/abort

    def write(self, chunk: bytes) -> None:
        if self.fail == "write" and self.written > 0:
            raise OSError("disk full")
        self._file.write(chunk)
        self.written += len(chunk)

    def finish(self) -> Message | None:
        self._file.close()
        self.finished = True
        if self.fail == "verify":
            return None
        assert self.msg.snapshot is not None
        return replace(self.msg, snapshot=replace(self.msg.snapshot, data=str(self.path).encode()))

    def abort(self) -> None:
        self.aborted = True
        self._file.close()


class Node:
    """A PeerTransport whose callbacks record what happened."""

    def __init__(self, node_id: str, *, secret: bytes = SECRET, port: int = 0, **kw: Any) -> None:
        self.id = node_id
        self.inbox: list[Message] = []
        self.unreachable: list[str] = []
        self.snap_status: list[tuple[str, bool]] = []
        self.sinks: list[FileSink] = []
        self.snapshot_path: str | None = None
        #: Replaces the file source when set (a stream produced as it is sent).
        self.snapshot_source: Callable[[Message], SnapshotSource | None] | None = None
        self.sink_dir: Path | None = None
        self.sink_fail: str | None = None
        self.on_message_hook: Callable[[Message], None] | None = None
        self.t = PeerTransport(
            node_id,
            secret,
            (HOST, port),
            {},
            self._on_message,
            self.unreachable.append,
            self._snapshot_source,
            self._open_sink,
            lambda peer, ok: self.snap_status.append((peer, ok)),
            **kw,
        )

    def _snapshot_source(self, msg: Message) -> SnapshotSource | None:
        if self.snapshot_source is not None:
            return self.snapshot_source(msg)
        return None if self.snapshot_path is None else FileSource(self.snapshot_path, msg)

    def _on_message(self, msg: Message) -> None:
        self.inbox.append(msg)
        if self.on_message_hook is not None:
            self.on_message_hook(msg)

    def _open_sink(self, msg: Message, size: int) -> FileSink:
        assert self.sink_dir is not None
        path = self.sink_dir / f"recv-{len(self.sinks)}.snap"
        sink = FileSink(path, msg, size, fail=self.sink_fail)
        self.sinks.append(sink)
        return sink

    @property
    def addr(self) -> tuple[str, int]:
        return (HOST, self.t.port)

    def from_(self, frm: str) -> list[Message]:
        return [m for m in self.inbox if m.frm == frm]


async def start_nodes(ids: Iterable[str], **kw: Any) -> dict[str, Node]:
    """Start transports on free ports and tell each the others' addresses."""
    nodes = {i: Node(i, **kw) for i in ids}
    for n in nodes.values():
        await n.t.start()
    addrs = {i: n.addr for i, n in nodes.items()}
    for n in nodes.values():
        n.t.update_peers(addrs)
    return nodes


async def start_snapshot_pair(tmp_path: Path, size: int) -> tuple[Node, Node, Path]:
    """Nodes a and b; a streams ``tmp_path/snapshot.bin`` (``size`` random bytes) to b."""
    src = tmp_path / "snapshot.bin"
    src.write_bytes(os.urandom(size))
    nodes = await start_nodes(("a", "b"))
    a, b = nodes["a"], nodes["b"]
    a.snapshot_path = str(src)
    b.sink_dir = tmp_path
    return a, b, src


async def stop_nodes(nodes: Iterable[Node]) -> None:
    for n in nodes:
        await n.t.stop()


class RawPeer:
    """A hand-driven client speaking the wire protocol (or not) over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, kind: int, payload: bytes = b"") -> None:
        await self.send_raw(framing.frame(kind, payload))

    async def send_message(self, msg: Message) -> None:
        await self.send_frame(framing.K_MSG, encode_message(msg))

    async def read_frame(self) -> tuple[int, bytes]:
        length, kind = framing.HEADER.unpack(await self.reader.readexactly(5))
        return kind, await self.reader.readexactly(length - 1)

    async def handshake(
        self, client: str, server: str, secret: bytes = SECRET, channel: int = framing.CH_RAFT
    ) -> bool:
        """Run the client side; True if the server proved itself and accepted us."""
        hello = framing.Hello(
            framing.PROTOCOL_VERSION, channel, client, server, framing.new_nonce()
        )
        await self.send_frame(framing.K_HELLO, framing.encode_hello(hello))
        kind, nonce = await self.read_frame()
        assert kind == framing.K_CHALLENGE and len(nonce) == framing.NONCE_BYTES
        await self.send_frame(framing.K_AUTH, framing.proof(secret, b"client", hello, nonce))
        try:
            kind, server_proof = await self.read_frame()
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        self.hello, self.nonce = hello, nonce  # what the session keys derive from
        return kind == framing.K_WELCOME and server_proof == framing.proof(
            secret, b"server", hello, nonce
        )

    async def closed_by_peer(self, timeout: float = 5.0) -> bytes:
        """Read until the other side closes; return what arrived (fails on timeout)."""
        got = bytearray()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                got += data
        return bytes(got)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def oversize_header(length: int) -> bytes:
    return struct.pack(">IB", length, framing.K_MSG)
