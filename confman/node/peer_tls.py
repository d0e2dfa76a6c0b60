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

import logging
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PeerTLS",
    "PeerTLSContexts",
    "PeerTLSError",
    "load_contexts",
    "observe_handshakes",
    "parse_tls_table",
]

_FILES = ("cert_file", "key_file", "ca_file")

log = logging.getLogger("confman.node.transport")


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
            f"raft.tls.cert_file/key_file: cannot load the certificate {tls.cert_file} "
            f"with the key {tls.key_file} (not PEM, or not a matching pair?): {exc}"
        ) from None
    try:
        ctx.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise PeerTLSError(
            f"raft.tls.ca_file: cannot load CA certificates from {tls.ca_file}: {exc}"
        ) from None
    return ctx


def load_contexts(tls: PeerTLS) -> PeerTLSContexts:
    """Build both contexts from the files (read now); ``PeerTLSError`` names what is wrong."""
    server = _context(ssl.PROTOCOL_TLS_SERVER, tls)
    client = _context(ssl.PROTOCOL_TLS_CLIENT, tls)
    client.check_hostname = tls.check_hostname
    return PeerTLSContexts(server, client)


def parse_tls_table(table: Mapping[str, Any], base: Path) -> PeerTLS:
    """``[raft.tls]`` as parsed TOML: files resolved against ``base``, read and loaded once."""
    unknown = sorted(set(table) - {*_FILES, "check_hostname"})
    if unknown:
        raise PeerTLSError(f"raft.tls.{unknown[0]}: unknown setting")
    paths: list[Path] = []
    for name in _FILES:
        raw = table.get(name)
        if not isinstance(raw, str) or not raw:
            raise PeerTLSError(f"raft.tls.{name}: required (a file name)")
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        if not path.is_file():
            raise PeerTLSError(f"raft.tls.{name}: no such file {path}")
        if not os.access(path, os.R_OK):
            raise PeerTLSError(f"raft.tls.{name}: cannot read {path} (permissions)")
        paths.append(path)
    check = table.get("check_hostname", True)
    if not isinstance(check, bool):
        raise PeerTLSError(f"raft.tls.check_hostname: expected true or false, got {check!r}")
    tls = PeerTLS(paths[0], paths[1], paths[2], check)
    load_contexts(tls)  # a certificate, key or CA that does not load fails here, at start-up
    return tls


def observe_handshakes(ctx: ssl.SSLContext, on_failure: Callable[[], None]) -> None:
    """Log each TLS handshake that fails under ``ctx`` (reason only) and call ``on_failure``.

    asyncio and uvloop both drive handshakes through ``ctx.wrap_bio``; a failed server-side
    handshake never reaches the protocol, so this is where a refused peer can be counted.
    The context's ``sslobject_class`` is replaced: give each transport contexts of its own.
    """

    class _Observed(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                log.warning("peer TLS handshake refused: %s", exc.reason or type(exc).__name__)
                on_failure()
                raise

    ctx.sslobject_class = _Observed
