"""Outbound snapshot streaming: `SnapshotSender` sends a snapshot on a link of its own.

A SNAPSHOT message leaves on a ``CH_SNAPSHOT`` connection dialled for that one transfer, so
heartbeats never wait behind it: a header (the stream's size, or `SIZE_UNKNOWN` for a stream
produced as it is sent, and the message without its data), the stream in pieces of at most
`SNAPSHOT_CHUNK` bytes produced off the loop (`SnapshotSource.read` on the sender's own
threads), an end frame with size and CRC-32, then the receiver's verdict
(``confman.node.peer_inbound`` receives). The source may rewrite the message's snapshot
meta (a live dump is at the index its read transaction sees). The stream is paced: the
sender awaits ``drain`` after each piece and, with ``rate_bytes_s``, keeps below that rate.
The outcome is reported through ``on_status(peer_id, ok)`` unless the peer was removed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeVar

from confman.node.codec import encode_message
from confman.node.framing import (
    CH_SNAPSHOT,
    K_SNAP_CHUNK,
    K_SNAP_END,
    K_SNAP_HEADER,
    SNAP_END,
    SNAP_SIZE,
    SNAP_SIZE_UNKNOWN,
)
from confman.node.peer_link import Addr
from confman.node.peer_outbound import Outbound
from confman.node.peer_queue import PeerQueue
from confman.raft.types import Message

__all__ = ["SNAPSHOT_CHUNK", "FileSource", "SnapshotSender", "SnapshotSource"]

log = logging.getLogger("confman.node.transport")

SNAPSHOT_CHUNK = 1 << 20
_T = TypeVar("_T")


class SnapshotSource(Protocol):
    """What one snapshot stream sends. ``read`` and ``close`` block: the sender calls them on
    its own threads, one call at a time."""

    #: The message the header carries (its snapshot's data is not sent).
    message: Message
    #: Bytes the stream holds, or None when they are produced as they are sent.
    size: int | None

    def read(self) -> bytes:
        """The next piece (at most `SNAPSHOT_CHUNK` bytes); b"" at the end."""
        ...

    def close(self) -> None:
        """Release what the source holds (file, read transaction)."""
        ...


class FileSource:
    """A snapshot file sent as it is."""

    def __init__(self, path: str, message: Message) -> None:
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size: int | None = os.fstat(self._fd).st_size
        self.message = message
        self._offset = 0

    def read(self) -> bytes:
        assert self.size is not None
        n = min(SNAPSHOT_CHUNK, self.size - self._offset)
        if n <= 0:
            return b""
        chunk = os.pread(self._fd, n, self._offset)
        if not chunk:
            raise EOFError(f"snapshot file shrank to {self._offset} bytes while streaming")
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SnapshotSender:
    """Streams snapshots to peers (one at a time per peer, tracked in ``snapshot_task``).

    ``open_source(msg)`` opens what a SNAPSHOT message sends (None: there is none; it
    blocks, so it runs on the sender's threads); ``dial(addr, channel, peer_id)`` connects
    and authenticates; ``timeout`` is the longest stall of a stream and the longest wait for
    the receiver's verdict; ``rate_bytes_s`` (0: unlimited) paces the stream.
    """

    def __init__(
        self,
        open_source: Callable[[Message], SnapshotSource | None],
        dial: Callable[[Addr, int, str], Awaitable[Outbound]],
        on_status: Callable[[str, bool], None],
        timeout: float,
        rate_bytes_s: int = 0,
    ) -> None:
        self._open_source = open_source
        self._dial = dial
        self._on_status = on_status
        self._timeout = timeout
        self._rate = rate_bytes_s
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def shutdown(self) -> None:
        """Stop the source readers (after the streams were cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, fn: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="confman-snapshot"
            )
        return self._executor.submit(fn)

    async def stream(self, peer: PeerQueue, msg: Message) -> None:
        """Header, pieces, end; then wait for the receiver's verdict and report it."""
        ok = False
        conn: Outbound | None = None
        source: SnapshotSource | None = None
        opening: concurrent.futures.Future[SnapshotSource | None] | None = None
        reading: concurrent.futures.Future[bytes] | None = None
        try:
            if msg.snapshot is None:
                raise ValueError("SNAPSHOT message without a snapshot")
            opening = self._run(lambda: self._open_source(msg))
            async with asyncio.timeout(self._timeout):
                source = await asyncio.wrap_future(opening)
            opening = None
            if source is None:
                raise FileNotFoundError("nothing to send for this snapshot message")
            conn = await self._dial(peer.addr, CH_SNAPSHOT, peer.id)
            out = source.message
            assert out.snapshot is not None
            wire = replace(out, snapshot=replace(out.snapshot, data=b""))
            size = SNAP_SIZE_UNKNOWN if source.size is None else source.size
            conn.write_frame(K_SNAP_HEADER, SNAP_SIZE.pack(size) + encode_message(wire))
            sent = crc = 0
            t0 = time.monotonic()
            while not conn.ack.done():
                reading = self._run(source.read)
                async with asyncio.timeout(self._timeout):
                    chunk = await asyncio.wrap_future(reading)
                    reading = None
                    if not chunk:
                        break
                    crc = zlib.crc32(chunk, crc)
                    conn.write_frame(K_SNAP_CHUNK, chunk)
                    sent += len(chunk)
                    await conn.drain()
                if self._rate > 0 and (ahead := sent / self._rate - (time.monotonic() - t0)) > 0:
                    await asyncio.sleep(ahead)
            if not conn.ack.done():
                conn.write_frame(K_SNAP_END, SNAP_END.pack(sent, crc))
            async with asyncio.timeout(self._timeout):
                ok = await conn.ack
            if not ok:
                log.warning("snapshot to %s rejected by the receiver", peer.id)
        except Exception as exc:
            log.warning("snapshot to %s failed: %r", peer.id, exc)
        finally:
            if conn is not None:
                conn.fail("snapshot stream over", level=logging.DEBUG)
            if opening is not None and not opening.done():
                opening.add_done_callback(_close_opened)  # close it once it is open
            elif reading is not None and not reading.done():
                reading.add_done_callback(lambda _f: _close(source))  # after the read
            else:
                _close(source)
            if peer.snapshot_task is asyncio.current_task():
                peer.snapshot_task = None
        if not peer.removed:
            self._on_status(peer.id, ok)


def _close(source: SnapshotSource | None) -> None:
    if source is not None:
        try:
            source.close()
        except Exception:
            log.exception("closing a snapshot source failed")


def _close_opened(future: concurrent.futures.Future[SnapshotSource | None]) -> None:
    if not future.cancelled() and future.exception() is None:
        _close(future.result())
