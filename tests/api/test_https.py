"""HTTPS for the API (issue 14): ``[http.tls]`` validation, a cluster serving HTTPS to the
client and the CLI with ``--cacert``, mTLS refusing a client without a certificate, and the
certificate reloaded on SIGHUP while the node stays in its cluster. Certificates come from
``trustme``."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from click.testing import CliRunner

from confman.api.tls import ServerTls
from confman.cli import main
from confman.client import Client, ConnectionFailed
from confman.node.config import ConfigError, HttpTls, from_mapping
from confman.verify.cluster import ProcessCluster, api_ca_file

pytestmark = pytest.mark.timeout(180)


# -- configuration and the context, without a node ---------------------------------------


def pair(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", common_name=name)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


def raw(tls: dict[str, Any], advertise: str = "https://127.0.0.1:6100/") -> dict[str, Any]:
    return {
        "node_id": "n1",
        "data_dir": "data",
        "cluster_secret": "s" * 32,
        "http": {"advertise": advertise, "tls": tls},
        "members": [{"id": "n1", "raft": "127.0.0.1:7100", "http": advertise}],
    }


def test_http_tls_settings_are_checked(tmp_path: Path) -> None:
    cert, key = pair(trustme.CA(), tmp_path, "n1")
    cfg = from_mapping(raw({"cert_file": "cert.pem", "key_file": str(key)}), tmp_path)
    assert cfg.http_tls == HttpTls(cert, key, None)  # relative to the config's directory
    for tls, advertise, field in [
        ({"cert_file": str(cert)}, None, "http.tls.key_file: required"),
        ({"cert_file": "nope.pem", "key_file": str(key)}, None, "http.tls.cert_file: cannot"),
        ({"cert_file": str(cert), "key_file": str(key), "ca": "x"}, None, "http.tls.ca: unknown"),
        ({"cert_file": str(cert), "key_file": str(key)}, "http://127.0.0.1:6100/", "https://"),
    ]:
        with pytest.raises(ConfigError, match=field):
            from_mapping(raw(tls, advertise or "https://127.0.0.1:6100/"), tmp_path)
    with pytest.raises(ConfigError, match=r"http\.tls\.cert_file/key_file: cannot load"):
        ServerTls(HttpTls(key, key))  # a key is no certificate


def peer_name(port: int, ca: trustme.CA | None = None, ctx: ssl.SSLContext | None = None) -> str:
    """The common name of the certificate a new connection to ``port`` is shown."""
    if ctx is None:
        ctx = ssl.create_default_context()
        assert ca is not None
        ca.configure_trust(ctx)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock,
        ctx.wrap_socket(raw_sock, server_hostname="127.0.0.1") as tls_sock,
    ):
        cert = tls_sock.getpeercert()
    assert cert is not None
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_reload_serves_the_new_pair_to_new_connections_and_keeps_a_bad_one_out(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert, key = pair(ca, tmp_path, "cert A")
    tls = ServerTls(HttpTls(cert, key))
    assert not tls.mutual

    async def run() -> list[str]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=tls.context)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        names = [await loop.run_in_executor(None, peer_name, port, ca)]
        pair(ca, tmp_path, "cert B")
        assert tls.reload()
        names.append(await loop.run_in_executor(None, peer_name, port, ca))
        key.write_text("not a key")
        assert not tls.reload()  # refused: cert B stays
        names.append(await loop.run_in_executor(None, peer_name, port, ca))
        server.close()
        return names

    assert asyncio.run(run()) == ["cert A", "cert B", "cert B"]
    assert tls.reloads == 1


# -- a live HTTPS cluster ----------------------------------------------------------------


@pytest.fixture(scope="module")
def https_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    c = ProcessCluster(3, tmp_path_factory.mktemp("https-cluster"), api_tls=True)
    try:
        c.start_all()
        c.wait_leader(timeout=30)
        c.wait_ready(timeout=30)
        yield c
    finally:
        c.close()


def urls(c: ProcessCluster) -> str:
    return ",".join(c.url(n).rstrip("/") for n in c.ids)


def test_a_node_serves_https_to_a_client_trusting_its_ca(
    https_cluster: ProcessCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = https_cluster
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert all(c.url(n).startswith("https://") for n in c.ids)
    leader = c.wait_leader()
    assert c.status(leader)["cluster"]["leader"].startswith("https://")  # type: ignore[index]
    with Client(urls(c), c.keys["admin"], cacert=api_ca_file(), retry_timeout=20) as client:
        client.put_namespace("tls")
        assert client.put("tls", "k", "over https").version == 1
        assert client.get("tls", "k").value == "over https"  # the fast front, over TLS
    with (
        Client(urls(c), c.keys["admin"], retry_timeout=0.5) as stranger,
        pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        stranger.get("tls", "k")  # the default CAs do not know the test CA
    plain = c.url(leader).replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "health", timeout=2)  # no plain HTTP on an HTTPS port


def test_the_cli_takes_cacert(https_cluster: ProcessCluster, tmp_path: Path) -> None:
    c = https_cluster
    env = {"CONFMAN_API_KEY": c.keys["admin"], "SSL_CERT_FILE": ""}
    runner = CliRunner()
    args = ["--endpoints", urls(c), "--retry-timeout", "20"]
    done = runner.invoke(
        main, ["ns", "create", "tls-cli", *args, "--cacert", str(api_ca_file())], env=env
    )
    assert done.exit_code == 0, done.output
    via_env = runner.invoke(
        main, ["ls", "tls-cli", *args], env={**env, "CONFMAN_CACERT": str(api_ca_file())}
    )
    assert via_env.exit_code == 0, via_env.output
    refused = runner.invoke(main, ["ls", "tls-cli", *args[:2], "--retry-timeout", "0.5"], env=env)
    assert refused.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.output
    bad = tmp_path / "bad.pem"
    bad.write_text("no certificate here")
    wrong = runner.invoke(main, ["ls", *args, "--cacert", str(bad)], env=env)
    assert wrong.exit_code == 2 and "--cacert" in wrong.output


def test_sighup_reloads_the_certificate_and_the_node_stays_in_the_cluster(
    https_cluster: ProcessCluster,
) -> None:
    c = https_cluster
    ctx = ssl.create_default_context(cafile=str(api_ca_file()))
    leader = c.wait_leader()
    nid = next(n for n in c.ids if n != leader)
    port = c.node(nid).http_port
    before = c.status(nid)
    assert before is not None and before["status"] == "ready"
    old_name = peer_name(port, ctx=ctx)
    with httpx.Client(verify=ctx) as kept:  # a connection opened before the reload
        assert kept.get(c.url(nid) + "health").status_code == 200
        c.issue_api_cert("reloaded certificate")
        proc = c.node(nid).proc
        assert proc is not None
        proc.send_signal(signal.SIGHUP)
        c.wait_for(lambda: peer_name(port, ctx=ctx) == "reloaded certificate", 10, 0.1, "cert B")
        assert old_name != "reloaded certificate"
        r = kept.get(c.url(nid) + "health")  # the open connection was not dropped
        assert r.status_code == 200 and r.extensions["network_stream"] is not None
    c.check_alive()
    after = c.status(nid)
    assert after is not None and after["status"] == "ready"
    assert after["cluster"]["leader"] == before["cluster"]["leader"]
    assert after["cluster"]["term"] == before["cluster"]["term"]  # no election
    assert c.grep_log(nid, "TLS certificate reloaded")


def test_mtls_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    clients_ca = trustme.CA()  # client certificates come from their own CA
    clients_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    client_cert = tmp_path / "client.pem"
    issued = clients_ca.issue_cert("client@example.org", common_name="a client")
    issued.private_key_and_cert_chain_pem.write_to_path(str(client_cert))
    extra = {"http": {"tls": {"client_ca_file": str(tmp_path / "clients-ca.pem")}}}
    ca = api_ca_file()
    # the harness's own polls carry no client certificate: the clients wait for the leader
    with ProcessCluster(1, tmp_path / "mtls", api_tls=True, extra=extra) as c:
        c.start_all()
        url = c.url("node1").rstrip("/")
        with Client(url, c.keys["admin"], cacert=ca, cert=client_cert, retry_timeout=30) as ok:
            ok.put_namespace("mtls")
            assert ok.namespace("mtls").path == "mtls"
        with (
            Client(url, c.keys["admin"], cacert=ca, retry_timeout=0.5) as anonymous,
            pytest.raises(ConnectionFailed),
        ):
            anonymous.namespaces()
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/health", verify=ssl.create_default_context(cafile=str(ca)))
        stranger_ca = trustme.CA()  # a certificate the node's client CA did not sign
        stranger = stranger_ca.issue_cert("x@example.org").private_key_and_cert_chain_pem
        stranger.write_to_path(str(tmp_path / "stranger.pem"))
        with (
            Client(
                url, c.keys["admin"], cacert=ca, cert=tmp_path / "stranger.pem", retry_timeout=0.5
            ) as other,
            pytest.raises(ConnectionFailed),
        ):
            other.namespaces()
