"""Outbound snapshot streaming: `SnapshotSender` sends a snapshot file on a link of its own.

A SNAPSHOT message leaves on a ``CH_SNAPSHOT`` connection dialled for that one transfer, so
heartbeats never wait behind it: a header (file size and the message without its data),
the file in chunks of `SNAPSHOT_CHUNK` bytes read off the loop, an end frame with size and
CRC-32, then the receiver's verdict (``confman.node.peer_inbound`` receives). The outcome is
reported through ``on_status(peer_id, ok)`` unless the peer was removed meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace

from confman.node.codec import encode_message
from confman.node.framing import (
    CH_SNAPSHOT,
    K_SNAP_CHUNK,
    K_SNAP_END,
    K_SNAP_HEADER,
    SNAP_END,
    SNAP_SIZE,
)
from confman.node.peer_link import Addr
from confman.node.peer_outbound import Outbound
from confman.node.peer_queue import PeerQueue
from confman.raft.types import Message

__all__ = ["SNAPSHOT_CHUNK", "SnapshotSender"]

log = logging.getLogger("confman.node.transport")

SNAPSHOT_CHUNK = 1 << 20


def _read_chunk(fd: int, offset: int, size: int, crc: int) -> tuple[bytes, int]:
    chunk = os.pread(fd, size, offset)
    return chunk, zlib.crc32(chunk, crc)


class SnapshotSender:
    """Streams snapshots to peers (one at a time per peer, tracked in ``snapshot_task``).

    ``snapshot_file(msg)`` names the file of a SNAPSHOT message (None: there is none);
    ``dial(addr, channel, peer_id)`` connects and authenticates; ``timeout`` is the longest
    stall of a stream and the longest wait for the receiver's verdict.
    """

    def __init__(
        self,
        snapshot_file: Callable[[Message], str | None],
        dial: Callable[[Addr, int, str], Awaitable[Outbound]],
        on_status: Callable[[str, bool], None],
        timeout: float,
    ) -> None:
        self._snapshot_file = snapshot_file
        self._dial = dial
        self._on_status = on_status
        self._timeout = timeout
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def shutdown(self) -> None:
        """Stop the file readers (after the streams were cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def stream(self, peer: PeerQueue, msg: Message) -> None:
        """Header, chunks, end; then wait for the receiver's verdict and report it."""
        ok = False
        conn: Outbound | None = None
        fd = -1
        reading: concurrent.futures.Future[tuple[bytes, int]] | None = None
        try:
            if msg.snapshot is None:
                raise ValueError("SNAPSHOT message without a snapshot")
            path = self._snapshot_file(msg)
            if path is None:
                raise FileNotFoundError("no snapshot file for this message")
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            size = os.fstat(fd).st_size
            conn = await self._dial(peer.addr, CH_SNAPSHOT, peer.id)
            wire = replace(msg, snapshot=replace(msg.snapshot, data=b""))
            conn.write_frame(K_SNAP_HEADER, SNAP_SIZE.pack(size) + encode_message(wire))
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="confman-snapshot"
                )
            offset = crc = 0
            while offset < size and not conn.ack.done():
                n = min(SNAPSHOT_CHUNK, size - offset)
                reading = self._executor.submit(_read_chunk, fd, offset, n, crc)
                async with asyncio.timeout(self._timeout):
                    chunk, crc = await asyncio.wrap_future(reading)
                    reading = None
                    if not chunk:
                        raise EOFError(f"{path} shrank to {offset} bytes while streaming")
                    conn.write_frame(K_SNAP_CHUNK, chunk)
                    offset += len(chunk)
                    await conn.drain()
            if not conn.ack.done():
                conn.write_frame(K_SNAP_END, SNAP_END.pack(offset, crc))
            async with asyncio.timeout(self._timeout):
                ok = await conn.ack
            if not ok:
                log.warning("snapshot to %s rejected by the receiver", peer.id)
        except Exception as exc:
            log.warning("snapshot to %s failed: %r", peer.id, exc)
        finally:
            if conn is not None:
                conn.fail("snapshot stream over", level=logging.DEBUG)
            if fd >= 0:
                if reading is not None and not reading.done():
                    # a worker still reads from fd: close it when the read returns
                    reading.add_done_callback(_closer(fd))
                else:
                    os.close(fd)
            if peer.snapshot_task is asyncio.current_task():
                peer.snapshot_task = None
        if not peer.removed:
            self._on_status(peer.id, ok)


def _closer(fd: int) -> Callable[[object], None]:
    def close(_future: object) -> None:
        os.close(fd)

    return close
