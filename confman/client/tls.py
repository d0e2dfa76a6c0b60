"""TLS settings of the client: which CA to trust and the client certificate (mTLS)."""

from __future__ import annotations

import os
import ssl

PathLike = str | os.PathLike[str]


def ssl_context(
    cacert: PathLike | None = None, cert: PathLike | None = None, key: PathLike | None = None
) -> ssl.SSLContext | bool:
    """The ``verify`` argument of httpx: a context trusting ``cacert`` (else the default CAs)
    that presents ``cert``/``key`` (``key`` may be inside ``cert``), or True when nothing
    is set (httpx's defaults, which honour ``$SSL_CERT_FILE``). Unreadable files: ValueError."""
    if key is not None and cert is None:
        raise ValueError("a client key (key) needs its certificate (cert)")
    if cacert is None and cert is None:
        return True
    if cacert is None:
        import certifi

        cacert = os.environ.get("SSL_CERT_FILE") or certifi.where()
    try:
        ctx = ssl.create_default_context(cafile=os.fspath(cacert))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cacert: cannot load {os.fspath(cacert)}: {exc}") from None
    if cert is not None:
        try:
            ctx.load_cert_chain(os.fspath(cert), None if key is None else os.fspath(key))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cert/key: cannot load {os.fspath(cert)}: {exc}") from None
    return ctx
