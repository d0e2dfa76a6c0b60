"""Peer transport: authenticated, pipelined TCP between the Raft nodes of a cluster.

Each node listens once and dials each peer lazily. Raft messages to a peer travel on one
outbound connection (the peer's replies come back on the peer's own outbound connection),
written in batches: everything queued for the peer during one loop iteration goes out in one
``transport.write``. Snapshots stream on a separate connection per transfer, so heartbeats
never wait behind them. Wire format and handshake: ``confman.node.framing``.

Delivery is best effort, as Raft expects: on a connection failure the queue is dropped and
``on_unreachable`` reported once; a full queue drops its oldest non-essential messages
(appends, heartbeats and their responses before votes, ReadIndex and transfer messages).
Callbacks always run on the event loop from a callback of their own, never from inside
``send``, ``update_peers`` or ``stop``, and never after ``stop``.

The handshake authenticates both ends with the cluster secret and admits only peers of the
current peer set; every later frame carries a MAC keyed from that handshake
(``confman.node.peer_auth``), so a machine on the path can neither inject, drop, replay nor
reorder frames. Without TLS the frames travel in clear: with ``tls`` (``[raft.tls]``, see
``confman.node.peer_tls``) every link is mutual TLS as well, and the MACs stay on. Refused
connections are counted by reason in ``refused`` (see ``confman.node.peer_inbound``).

This module holds `PeerTransport`, the public face: the peer set, ``send``, start and stop,
the accepted connections by peer, and the callbacks. The rest lives beside it:
``peer_queue`` (outbound queues, batched flush, the connection loop with its reconnects),
``peer_outbound`` (dialling and the client half of the handshake), ``peer_inbound`` (the
accepting side), ``peer_snapshot`` (outbound snapshot streams) and ``peer_link`` (the
`LinkContext` they all share instead of reaching into the transport).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from confman.node.framing import CH_RAFT
from confman.node.peer_inbound import Inbound
from confman.node.peer_link import Addr, LinkContext, SnapshotSink
from confman.node.peer_outbound import Outbound, dial
from confman.node.peer_queue import Outbox, PeerQueue
from confman.node.peer_snapshot import SNAPSHOT_CHUNK, SnapshotSender, SnapshotSource
from confman.node.peer_tls import PeerTLSContexts, observe_handshakes
from confman.raft.types import Message, MessageType

__all__ = ["SNAPSHOT_CHUNK", "PeerTransport", "SnapshotSink"]

log = logging.getLogger("confman.node.transport")


class PeerTransport:
    """Carries Raft messages between this node and its peers (see the module docstring).

    ``peers`` maps the other members' ids to their raft addresses (our own id is ignored).
    Inbound connections are accepted from a node that proves knowledge of ``secret`` and
    is in the current peer set (``update_peers`` changes it; removed peers are cut off).
    ``max_frame_bytes`` must be the same on every node. ``tls``: mutual TLS on every link.
    ``on_refused(reason)`` is called for each refused connection. Optional: ``connect_timeout``
    (dial plus handshake), ``handshake_timeout`` (inbound), ``snapshot_timeout`` (longest
    stall of a snapshot stream, and the wait for the receiver's verdict),
    ``snapshot_rate_bytes_s`` (pace of an outbound snapshot stream, 0: unlimited), ``backoff``
    (first and largest reconnect delay, jittered), ``rng`` for the jitter.
    """

    def __init__(
        self,
        node_id: str,
        secret: bytes,
        listen: tuple[str, int],
        peers: Mapping[str, tuple[str, int]],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[str], None],
        snapshot_source: Callable[[Message], SnapshotSource | None],
        open_snapshot_sink: Callable[[Message, int], SnapshotSink],
        on_snapshot_status: Callable[[str, bool], None],
        max_frame_bytes: int = 64 << 20,
        queue_limit: int = 10_000,
        *,
        connect_timeout: float = 2.0,
        handshake_timeout: float = 5.0,
        snapshot_timeout: float = 30.0,
        snapshot_rate_bytes_s: int = 0,
        backoff: tuple[float, float] = (0.01, 1.0),
        rng: random.Random | None = None,
        tls: PeerTLSContexts | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        if max_frame_bytes < SNAPSHOT_CHUNK + 16:
            raise ValueError(f"max_frame_bytes must be at least {SNAPSHOT_CHUNK + 16}")
        if queue_limit < 1:
            raise ValueError("queue_limit must be positive")
        self.node_id = node_id
        self._listen = listen
        self.port = listen[1]
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._queue_limit = queue_limit
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._tls = tls
        if tls is not None:
            observe_handshakes(tls.server, lambda: self._refused("tls"))
        self._on_refused = on_refused
        #: Connections refused, by reason: tls, handshake, auth, non_member, mac.
        self.refused: Counter[str] = Counter()
        self._peers: dict[str, PeerQueue] = {}
        self._link = LinkContext(
            node_id,
            bytes(secret),
            max_frame_bytes,
            handshake_timeout,
            snapshot_timeout,
            refused=self._refused,
            is_member=self._peers.__contains__,
            on_message=on_message,
            open_snapshot_sink=open_snapshot_sink,
        )
        self._outbox = Outbox(
            self._link,
            self._dial,
            self._spawn,
            self._report_unreachable,
            backoff[0],
            backoff[1],
            rng or random.Random(),
        )
        self._snapshots = SnapshotSender(
            snapshot_source,
            self._dial,
            self._report_snapshot_status,
            snapshot_timeout,
            snapshot_rate_bytes_s,
        )
        self._inbound_raft: dict[str, Inbound] = {}
        self._inbound_snap: dict[str, Inbound] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self.update_peers(peers)

    # -- public API -----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listener (port 0 picks a free port: see ``self.port``)."""
        if self._server is not None or self._link.closed:
            raise RuntimeError("transport already started or stopped")
        self._loop = self._outbox.loop = loop = asyncio.get_running_loop()
        host, port = self._listen
        tls = self._tls
        self._server = await loop.create_server(
            lambda: Inbound(self._link, self._inbound_ready, self._inbound_closed),
            host,
            port,
            reuse_address=True,
            backlog=128,
            ssl=None if tls is None else tls.server,
            ssl_handshake_timeout=None if tls is None else self._handshake_timeout,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        for peer in self._peers.values():
            if peer.queue:
                peer.schedule_flush()

    async def stop(self) -> None:
        """Close the listener and every connection, cancel every task, drop every queue."""
        if self._link.closed:
            return
        self._link.closed = True
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            peer.queue.clear()
        for task in self._tasks:
            task.cancel()
        conns = self._link.conns
        for conn in list(conns):
            conn.fail("transport stopped", level=logging.DEBUG)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(conns):  # dialled while the tasks were unwinding
            conn.fail("transport stopped", level=logging.DEBUG)
        if self._server is not None:
            await self._server.wait_closed()
        pending = [c.closed for c in conns]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        self._snapshots.shutdown()

    def send(self, msgs: Iterable[Message]) -> None:
        """Queue messages for their peers; never blocks. SNAPSHOT messages start a stream."""
        if self._link.closed:
            return
        peers = self._peers
        limit = self._queue_limit
        unknown: set[str] | None = None
        overflowed: set[str] | None = None
        for msg in msgs:
            peer = peers.get(msg.to)
            if peer is None:
                if unknown is None:
                    unknown = set()
                unknown.add(msg.to)
                continue
            if msg.type is MessageType.SNAPSHOT:
                self._start_snapshot(peer, msg)
                continue
            queue = peer.queue
            if len(queue) >= limit:
                peer.drop_oldest()
                if overflowed is None:
                    overflowed = set()
                overflowed.add(peer.id)
            queue.append(msg)
            if not peer.flush_pending:
                peer.schedule_flush()
        if unknown:
            for node in unknown:
                if node != self.node_id:
                    log.debug("no address for %r: message dropped", node)
                    self._defer(self._on_unreachable, node)
        if overflowed:
            for node in overflowed:
                log.warning("send queue to %s full: dropped the oldest messages", node)
                self._defer(self._on_unreachable, node)

    def update_peers(self, peers: Mapping[str, tuple[str, int]]) -> None:
        """Replace the peer set: new peers are dialled lazily, removed ones disconnected."""
        wanted = {k: (v[0], int(v[1])) for k, v in peers.items() if k != self.node_id}
        for node in [n for n in self._peers if n not in wanted]:
            self._remove_peer(node)
        for node, addr in wanted.items():
            peer = self._peers.get(node)
            if peer is None:
                self._peers[node] = PeerQueue(node, addr, self._outbox)
            elif peer.addr != addr:
                peer.addr = addr
                if peer.conn is not None:
                    peer.conn.intentional = True
                    peer.conn.fail(f"address of {node} changed", level=logging.INFO)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per peer: connected, queued, sent, dropped, reconnects, failures, received,
        rejected (inbound messages dropped for a spoofed ``frm``, a wrong ``to``, or a
        SNAPSHOT outside a stream), snapshot_in_flight."""
        received, rejected = self._link.received, self._link.rejected
        return {
            node: {
                "connected": p.conn is not None and not p.conn.closing,
                "queued": len(p.queue),
                "sent": p.sent,
                "dropped": p.dropped,
                "reconnects": p.reconnects,
                "failures": p.failures,
                "received": received[node],
                "rejected": rejected[node],
                "snapshot_in_flight": p.snapshot_task is not None,
            }
            for node, p in self._peers.items()
        }

    # -- outbound -------------------------------------------------------------------------
    async def _dial(self, addr: Addr, channel: int, peer_id: str) -> Outbound:
        """Connect and complete the handshake, or raise an OSError."""
        tls = self._tls
        return await dial(
            self._link,
            addr,
            channel,
            peer_id,
            tls=None if tls is None else tls.client,
            timeout=self._connect_timeout,
        )

    def _remove_peer(self, node: str) -> None:
        self._peers.pop(node).remove()
        for table in (self._inbound_raft, self._inbound_snap):
            conn = table.get(node)
            if conn is not None:
                conn.fail(f"{node} removed from the peers", level=logging.INFO)

    def _start_snapshot(self, peer: PeerQueue, msg: Message) -> None:
        if self._loop is None:
            log.warning("snapshot to %s dropped: transport not started", peer.id)
            return
        if peer.snapshot_task is not None:
            log.warning("snapshot to %s dropped: a transfer is already in flight", peer.id)
            peer.dropped += 1
            return
        peer.snapshot_task = self._spawn(self._snapshots.stream(peer, msg))

    def _report_unreachable(self, node: str) -> None:
        self._defer(self._on_unreachable, node)

    def _report_snapshot_status(self, node: str, ok: bool) -> None:
        self._defer(self._on_snapshot_status, node, ok)

    # -- inbound --------------------------------------------------------------------------
    def _refused(self, reason: str) -> None:
        """Count a refused connection (see ``refused``) and tell ``on_refused``."""
        self.refused[reason] += 1
        if self._on_refused is not None:
            try:
                self._on_refused(reason)
            except Exception:
                log.exception("on_refused raised")

    def _inbound_ready(self, conn: Inbound) -> None:
        table = self._inbound_raft if conn.channel == CH_RAFT else self._inbound_snap
        old = table.get(conn.peer_id)
        table[conn.peer_id] = conn
        if old is not None and old is not conn:
            old.fail(f"replaced by a newer connection from {conn.peer_id}", level=logging.INFO)

    def _inbound_closed(self, conn: Inbound) -> None:
        table = self._inbound_raft if conn.channel == CH_RAFT else self._inbound_snap
        if table.get(conn.peer_id) is conn:
            del table[conn.peer_id]

    # -- helpers --------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _defer(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._link.closed:
            self._loop.call_soon(self._call, fn, args)

    def _call(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._link.closed:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("transport callback %s raised", getattr(fn, "__name__", fn))
