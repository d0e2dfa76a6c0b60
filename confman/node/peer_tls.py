"""Mutual TLS for peer links (stdlib ``ssl``), configured by ``[raft.tls]``.

Both ends present a certificate signed by the cluster's CA and verify the other's: a node
accepts a connection only from a peer with such a certificate, and dials only peers that
have one (and, with ``check_hostname``, whose certificate names the address dialled). TLS
1.2 is the minimum. The secret handshake and the frame MACs of ``confman.node.peer_auth``
run inside TLS unchanged: TLS keeps the traffic private, the handshake still checks the
cluster secret and membership, and the MACs still bind every frame to that handshake, so a
certificate that leaks from elsewhere under the same CA is not enough to speak Raft.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PeerTLS", "PeerTLSContexts", "PeerTLSError", "load_contexts"]


class PeerTLSError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class PeerTLS:
    """The ``[raft.tls]`` settings: this node's certificate and key, and the cluster's CA."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class PeerTLSContexts:
    """The SSL contexts of one node: ``server`` for accepted, ``client`` for dialled links."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def _context(purpose: ssl._SSLMethod, tls: PeerTLS) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise PeerTLSError(
            f"cannot load the certificate {tls.cert_file} with the key {tls.key_file}: {exc}"
        ) from None
    try:
        ctx.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise PeerTLSError(f"cannot load the CA certificates {tls.ca_file}: {exc}") from None
    return ctx


def load_contexts(tls: PeerTLS) -> PeerTLSContexts:
    """Build both contexts from the files (read now); ``PeerTLSError`` names what is wrong."""
    server = _context(ssl.PROTOCOL_TLS_SERVER, tls)
    client = _context(ssl.PROTOCOL_TLS_CLIENT, tls)
    client.check_hostname = tls.check_hostname
    return PeerTLSContexts(server, client)
