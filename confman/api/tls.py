"""HTTPS for the API: the server's ``SSLContext`` from ``[http.tls]``, reloadable in place.

``reload()`` (on SIGHUP) loads the certificate and key again into the same context: new
connections are handshaken with the new pair, open connections keep theirs, and the node
stays in its cluster. The new files are tried in a scratch context first, so a bad pair
leaves the running one untouched. ``client_ca_file`` (mTLS) is read at start only.
"""

from __future__ import annotations

import logging
import ssl

from confman.node.config import ConfigError, HttpTls

log = logging.getLogger("confman.api.tls")


def _load_pair(ctx: ssl.SSLContext, tls: HttpTls) -> None:
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"http.tls.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file}: {exc}"
        ) from None


def _base_context(tls: HttpTls) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"http.tls.client_ca_file: cannot load {tls.client_ca_file}: {exc}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ServerTls:
    """The API's server context (``context``, for ``create_server``) and its reload."""

    def __init__(self, tls: HttpTls) -> None:
        self.tls = tls
        self.context = _base_context(tls)
        _load_pair(self.context, tls)
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        """True when clients must present a certificate signed by ``client_ca_file``."""
        return self.context.verify_mode == ssl.CERT_REQUIRED

    def reload(self) -> bool:
        """Load the certificate and key files again; False (logged) when they do not load,
        and the current pair stays in use."""
        try:
            _load_pair(_base_context(self.tls), self.tls)  # a bad pair stops here
            _load_pair(self.context, self.tls)
        except ConfigError as exc:
            log.error("TLS certificate not reloaded, the current one stays: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.tls.cert_file)
        return True


__all__ = ["ServerTls"]
