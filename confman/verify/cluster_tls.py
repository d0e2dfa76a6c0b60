"""Certificates for test clusters (``trustme``, a test dependency, imported only when used).

``api_tls`` clusters serve HTTPS with certificates from one test CA per process
(`api_ca_file`); ``peer_tls`` clusters get a CA of their own for their peer links
(`issue_peer_certs`). The environment variables `API_TLS_ENV` and `PEER_TLS_ENV` (``=1``)
turn either on by default.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confman.verify.cluster_base import ClusterError

__all__ = [
    "API_TLS_ENV",
    "PEER_TLS_ENV",
    "api_ca_file",
    "api_client_context",
    "issue_api_cert",
    "issue_peer_certs",
]

API_TLS_ENV = "CONFMAN_TEST_API_TLS"
PEER_TLS_ENV = "CONFMAN_TEST_PEER_TLS"
_API_CA: list[Any] = []  # [trustme.CA, Path of its PEM], made on first use


def _api_ca() -> Any:
    if not _API_CA:
        import trustme  # a test dependency: only api_tls clusters need it

        ca = trustme.CA()
        path = Path(tempfile.mkdtemp(prefix="confman-test-ca-")) / "ca.pem"
        ca.cert_pem.write_to_path(str(path))
        _API_CA.extend([ca, path])
    return _API_CA[0]


def api_ca_file() -> Path:
    """The PEM of the test CA behind every ``api_tls`` cluster of this process."""
    _api_ca()
    return Path(_API_CA[1])


def api_client_context() -> Any:
    """An ``ssl.SSLContext`` for clients that trusts the test CA."""
    import ssl

    return ssl.create_default_context(cafile=str(api_ca_file()))


def issue_peer_certs(d: Path, ids: Iterable[str]) -> None:
    """A CA for a cluster's peer links and a certificate for each of ``ids``, in ``d``."""
    try:
        import trustme  # a test dependency: only peer_tls clusters need it
    except ImportError:
        raise ClusterError("peer_tls needs trustme (pip install confman[dev])") from None
    d.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="confman test peers")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    for nid in ids:
        cert = ca.issue_cert("127.0.0.1", "localhost", nid)
        for i, pem in enumerate(cert.cert_chain_pems):
            pem.write_to_path(str(d / f"{nid}.pem"), append=i > 0)
        key = d / f"{nid}.key"
        key.touch(mode=0o600)
        cert.private_key_pem.write_to_path(str(key))


def issue_api_cert(cert_file: Path, key_file: Path, common_name: str) -> None:
    """(Re)write an API certificate and key, issued by the test CA for 127.0.0.1 and
    localhost."""
    cert = _api_ca().issue_cert("127.0.0.1", "localhost", common_name=common_name)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o600)
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
