"""What a peer connection gets from its transport: `LinkContext`, and `SnapshotSink`.

The connection protocols (``confman.node.peer_outbound`` for dialled links,
``confman.node.peer_inbound`` for accepted ones) and the outbound queues
(``confman.node.peer_queue``) see their ``PeerTransport`` only through one `LinkContext`:
this node's identity and limits, the set of open connections, the counters they update and
the callbacks they call. The transport makes it once and sets ``closed`` when it stops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from confman.node.framing import FramedProtocol
from confman.raft.types import Message

__all__ = ["Addr", "LinkContext", "SnapshotSink"]

Addr = tuple[str, int]


class SnapshotSink(Protocol):
    """Receiver side of one snapshot stream (created by ``open_snapshot_sink``)."""

    def write(self, chunk: bytes) -> None:
        """Append the next chunk of the file."""

    def finish(self) -> Message | None:
        """All bytes arrived: return the message to deliver, or None if verification failed."""

    def abort(self) -> None:
        """The transfer failed: discard what was written."""


@dataclass(eq=False, slots=True)
class LinkContext:
    """Shared by every connection of one transport (see the module docstring).

    ``refused(reason)`` counts a refused connection; ``is_member(node)`` says whether a node
    is in the current peer set; ``on_message`` and ``open_snapshot_sink`` are the
    transport's own callbacks. ``received`` and ``rejected`` count inbound messages by peer.
    """

    node_id: str
    secret: bytes
    max_frame: int
    handshake_timeout: float
    snapshot_timeout: float
    refused: Callable[[str], None]
    is_member: Callable[[str], bool]
    on_message: Callable[[Message], None]
    open_snapshot_sink: Callable[[Message, int], SnapshotSink]
    conns: set[FramedProtocol] = field(default_factory=set)
    """Every open connection, dialled or accepted: ``stop`` closes them."""
    received: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    closed: bool = False
    """Set once by ``PeerTransport.stop``: nothing is delivered after it."""
