"""The connections of the fast front: pipelining with backpressure, deadlines, caps, and
the handover to aiohttp.

- **Backpressure.** After each response the connection checks whether the transport
  called ``pause_writing`` (its write buffer is above the high-water mark, asyncio's 64 KiB
  by default); if so it stops answering and reading until ``resume_writing``. At most
  ``ANSWERS_PER_CALLBACK`` requests are answered in one callback before yielding to the
  loop. While a write is proposed, or answers wait for the loop, reading pauses once
  ``MAX_AHEAD`` bytes are buffered.
- **Deadlines** (``http.request_head_timeout_s``, ``http.keepalive_timeout_s``). A head
  must be complete within the head deadline from its first byte (for a connection's first
  request: from the connection); a connection idle between requests, or whose client read
  nothing of its answers, that long after the keep-alive timeout is closed. One timer per
  connection, re-armed only when a deadline moves earlier.
- **Caps** (``http.max_connections``, ``http.max_connections_per_ip``). Counted over every
  connection of the port, fast or handed over; one over a cap is closed at once.
- **Handover.** Every connection starts here, so the fast front owns every connection's
  first head and its deadline. A connection handed to aiohttp goes through
  ``fastpath_gate.Relay``, which keeps the head deadline for its later requests (aiohttp has
  none) and frees its place in the caps when it ends; aiohttp's own ``keepalive_timeout``
  is set to the same keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast

from confman.api.fastpath_gate import Gate, Relay
from confman.api.fastpath_parse import FastHead, HeadReader, RawHead


class Front(Protocol):
    """What a connection uses of the front it belongs to (``fastpath.FastFront``)."""

    gate: Gate
    conns: set[FastConnection]
    closing: bool
    answering: bool
    slow: Callable[[], asyncio.Protocol]

    def answer(self, raw: RawHead, peer: str | None) -> bytes | None: ...
    def write_head(self, raw: RawHead) -> FastHead | None: ...
    def start_write(
        self, h: FastHead, body: bytes, peer: str | None
    ) -> asyncio.Task[bytes] | None: ...


#: A request head longer than this is left to aiohttp (which enforces its own limits).
MAX_HEAD = 8192
#: Requests answered in one callback before the connection yields to the loop.
ANSWERS_PER_CALLBACK = 32
#: Bytes a client may send ahead while its answers wait before reading pauses.
MAX_AHEAD = 1 << 16
_NEVER = float("inf")


class FastConnection(asyncio.Protocol):
    """One client connection, until it sends a request of another shape."""

    __slots__ = (
        "_armed",
        "_buf",
        "_deadline",
        "_eof",
        "_front",
        "_ip",
        "_loop",
        "_peer",
        "_phase",
        "_probe",
        "_probed",
        "_put",
        "_read_paused",
        "_reader",
        "_scheduled",
        "_timer",
        "_transport",
        "_write_paused",
        "busy",
    )

    def __init__(self, front: Front) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader = HeadReader()
        #: A second reader for a head arriving in pieces, fed each piece once, so a head
        #: llhttp rejects goes to aiohttp (and its 400) before its end arrives.
        self._probe: HeadReader | None = None
        self._probed = 0
        self._buf = b""
        self._peer: str | None = None
        self._ip = ""
        self._write_paused = False
        self._read_paused = False
        self._scheduled = False
        self._eof = False
        #: A PUT whose head is read, waiting for its body: (fields, head length).
        self._put: tuple[FastHead, int] | None = None
        #: What the deadline is for: "head", "idle", "write", or None (no deadline).
        self._phase: str | None = "head"
        self._deadline = _NEVER
        self._armed = _NEVER
        self._timer: asyncio.TimerHandle | None = None
        #: The write in progress; requests after it wait (responses keep their order).
        self.busy: asyncio.Task[bytes] | None = None

    # -- asyncio's callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        self._ip = self._peer or ""
        gate = self._front.gate
        if not gate.admit(self._ip):
            t.abort()  # closed at once: no place is taken, connection_lost releases none
            return
        self._transport = t
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._front.conns.add(self)
        self._expect("head", self._loop.time() + gate.head_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._transport is None:
            return  # refused, or handed over (the relay releases its place)
        self._transport = None
        self._front.conns.discard(self)
        self._front.gate.release(self._ip)
        self._disarm()

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if self.busy is None and not self._scheduled and not self._write_paused:
            self._serve()
        else:
            self._flow()

    def eof_received(self) -> bool:
        self._eof = True
        # keep the transport open while answers are owed; _settle closes it after them
        return self.busy is not None or self._scheduled or self._write_paused

    def pause_writing(self) -> None:
        self._write_paused = True
        self._front.gate.metrics.http_write_pauses.inc()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.busy is None and not self._scheduled and self._transport is not None:
            self._serve()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def write_buffer_size(self) -> int:
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    # -- serving ------------------------------------------------------------------------
    def _serve(self) -> None:
        """Answer the complete requests buffered, until one must wait or go elsewhere, the
        client stops reading, or the callback's share is used up."""
        front = self._front
        buf = self._buf
        answered = 0
        while buf and not front.closing:
            if self._write_paused:
                break
            if answered >= ANSWERS_PER_CALLBACK:
                self._scheduled = True
                self._loop.call_soon(self._continue)
                break
            if self._put is not None:
                h, size = self._put
                total = size + h.length
                if len(buf) < total:
                    break  # the body is still on its way
                self._put = None
                body = buf[size:total]
                task = None
                if self._reader.body(body):
                    task = front.start_write(h, body, self._peer)
                if task is None:
                    self._hand_over(buf)
                    return
                self._buf = buf[total:]
                self.busy = task
                task.add_done_callback(self._written)
                self._expect(None, _NEVER)
                self._flow()
                return
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD or not self._probe_head(buf):
                    self._hand_over(buf)
                    return
                break
            self._probe = None
            if end > MAX_HEAD or not front.answering:
                self._hand_over(buf)
                return
            size = end + 4
            raw = self._reader.head(buf[:size])
            if raw is None:
                self._hand_over(buf)
                return
            if raw.method == b"PUT":
                put = front.write_head(raw)
                if put is None:
                    self._hand_over(buf)
                    return
                self._put = (put, size)
                self._phase = None  # the head is complete: the body's phase follows
                continue
            response = front.answer(raw, self._peer)
            if response is None:
                self._hand_over(buf)
                return
            assert self._transport is not None
            self._transport.write(response)  # may call pause_writing at once
            answered += 1
            self._phase = None
            buf = buf[size:]
        self._buf = buf
        self._settle()

    def _probe_head(self, buf: bytes) -> bool:
        """Whether the incomplete head ``buf`` is, so far, one llhttp accepts."""
        if self._probe is None:
            self._probe = HeadReader()
            self._probed = 0
        ok = self._probe.probe(buf[self._probed :])
        self._probed = len(buf)
        return ok

    def _continue(self) -> None:
        self._scheduled = False
        if self._transport is not None and self.busy is None:
            self._serve()

    def _written(self, task: asyncio.Task[bytes]) -> None:
        self.busy = None
        if self._transport is None or task.cancelled():
            return  # the client went away meanwhile
        self._transport.write(task.result())
        if self._front.closing:
            self.close()
            return
        self._serve()

    def _settle(self) -> None:
        """After serving: the deadline of what the connection now waits for, its reading,
        and its end once the client is done."""
        if self._transport is None or self.busy is not None:
            return
        gate = self._front.gate
        if self._write_paused:
            if self._phase != "write":
                self._expect("write", self._loop.time() + gate.idle_s)
        elif self._scheduled:
            pass
        elif self._eof:
            self.close()  # the client sent all it will; what is left is no whole request
            return
        elif not self._buf:
            self._expect("idle", self._loop.time() + gate.idle_s)
        elif self._put is not None:
            self._expect("head", self._loop.time() + gate.idle_s)  # the body is progressing
        elif self._phase != "head":
            self._expect("head", self._loop.time() + gate.head_s)  # a new head has begun
        self._flow()

    def _flow(self) -> None:
        """Read while the client reads its answers and has not run too far ahead."""
        transport = self._transport
        if transport is None:
            return
        waiting = self.busy is not None or self._scheduled
        pause = self._write_paused or (waiting and len(self._buf) > MAX_AHEAD)
        if pause and not self._read_paused:
            transport.pause_reading()
        elif self._read_paused and not pause:
            transport.resume_reading()
        self._read_paused = pause

    # -- deadlines ----------------------------------------------------------------------
    def _expect(self, phase: str | None, deadline: float) -> None:
        self._phase = phase
        self._deadline = deadline
        if deadline < self._armed:
            if self._timer is not None:
                self._timer.cancel()
            self._armed = deadline
            self._timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._armed = _NEVER
        transport = self._transport
        if transport is None:
            return
        if self.busy is not None or self._phase is None:
            self._expect(self._phase, self._loop.time() + self._front.gate.idle_s)
            return
        if self._loop.time() < self._deadline:
            self._expect(self._phase, self._deadline)
            return
        self._front.gate.metrics.http_timeouts.labels(self._phase).inc()
        if self._phase == "write":
            transport.abort()  # close() would wait for a client that does not read
        else:
            transport.close()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = _NEVER

    # -- handover -----------------------------------------------------------------------
    def _hand_over(self, pending: bytes) -> None:
        """Give the connection, and the bytes of the request not answered here, to aiohttp."""
        transport = self._transport
        assert transport is not None
        self._front.conns.discard(self)
        self._transport = None
        self._buf = b""
        self._put = None
        self._probe = None
        self._disarm()
        if self._read_paused:
            transport.resume_reading()
        relay = Relay(self._front.slow(), self._front.gate, self._ip)
        transport.set_protocol(relay)
        relay.connection_made(transport)
        if pending:
            relay.data_received(pending)
