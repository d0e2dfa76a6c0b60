"""The dev profile answers only requests whose ``Host`` names this node (issue 14, finding 5):
a DNS-rebinding page (``Host: evil.example``) gets 421, whatever the route. Production
accepts any Host (it relies on real keys, not on the network)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confman.api.access import parse_host
from tests.api.harness import LiveNode, headers

NS = "devhost"
ENTRY = f"/api/v1/namespaces/{NS}/config/k"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("dev-host"), profile="dev")
    try:
        c = live.client
        assert c.put(f"/api/v1/namespaces/{NS}", headers=headers("admin")).status_code == 201
        assert c.put(ENTRY, json={"value": "v"}, headers=headers("admin")).status_code == 201
        yield live
    finally:
        live.close()


def get(node: LiveNode, path: str, host: str) -> httpx.Response:
    return node.client.get(path, headers={**headers("admin"), "Host": host})


def refused(node: LiveNode) -> float:
    value = node.rt.metrics.registry.get_sample_value("confman_http_host_refused_total")
    return value or 0.0


@pytest.mark.parametrize("path", ["/health", "/api/v1/namespaces", "/metrics"])
@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"]
)
def test_own_addresses_are_answered(dev: LiveNode, path: str, host: str) -> None:
    r = get(dev, path, host.format(port=dev.server.port))  # type: ignore[union-attr]
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "evil.example",
        "127.0.0.1.evil.example:{port}",
        "localhost:{other}",
        "127.0.0.1:{other}",
        "localhost",
        "localhost:{port}:1",
        "localhost:x",
        "[::1]",
        "",
    ],
)
@pytest.mark.parametrize("path", ["/health", "/api/v1/namespaces", ENTRY])
def test_other_hosts_are_421_and_counted(dev: LiveNode, host: str, path: str) -> None:
    port = dev.server.port  # type: ignore[union-attr]
    before = refused(dev)
    r = get(dev, path, host.format(port=port, other=port + 1))
    assert r.status_code == 421, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 421 and "Host" in body["detail"]
    assert body["traceId"] == r.headers["X-Correlation-Id"]
    assert refused(dev) == before + 1


def test_a_write_with_a_foreign_host_changes_nothing(dev: LiveNode) -> None:
    r = dev.client.put(
        ENTRY, json={"value": "evil"}, headers={**headers("admin"), "Host": "evil.example"}
    )
    assert r.status_code == 421
    assert dev.client.get(ENTRY, headers=headers("admin")).json()["value"] == "v"


def test_a_request_without_host_is_421(dev: LiveNode) -> None:
    host, port = dev.server.host, dev.server.port  # type: ignore[union-attr]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 421 ") or data.startswith(b"HTTP/1.0 421 "), data[:100]


def raw(node: LiveNode, head: bytes, body: bytes = b"") -> bytes:
    """One request as minimal as a browser's fetch could make it (the fast path's shape)."""
    host, port = node.server.host, node.server.port  # type: ignore[union-attr]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_a_fast_path_get_with_a_foreign_host_is_421(dev: LiveNode) -> None:
    head = f"GET {ENTRY} HTTP/1.1\r\nHost: evil.example\r\nX-Api-Key: test-admin-key\r\n\r\n"
    assert raw(dev, head.encode()).startswith(b"HTTP/1.1 421 ")


def test_a_fast_path_put_with_a_foreign_host_is_421_and_writes_nothing(dev: LiveNode) -> None:
    body = b'{"value":"evil"}'
    head = (
        f"PUT {ENTRY} HTTP/1.1\r\nHost: evil.example\r\nX-Api-Key: test-admin-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    answer = raw(dev, head.encode(), body)
    value = dev.client.get(ENTRY, headers=headers("admin")).json()["value"]
    if value != "v":  # put it back for the other tests
        dev.client.put(ENTRY, json={"value": "v"}, headers=headers("admin"))
    assert answer.startswith(b"HTTP/1.1 421 ") and value == "v"


def test_the_advertised_host_is_answered(tmp_path: Path) -> None:
    from tests.api.harness import free_port

    port = free_port()
    live = LiveNode(
        tmp_path,
        profile="dev",
        http_listen=("127.0.0.1", port),
        http_advertise=f"http://confman-dev.test:{port}/",
    )
    try:
        assert get(live, "/health", f"confman-dev.test:{port}").status_code == 200
        assert get(live, "/health", f"Confman-Dev.Test:{port}").status_code == 200
        assert get(live, "/health", f"confman-dev.test:{port + 1}").status_code == 421
    finally:
        live.close()


def test_production_accepts_any_host(node: LiveNode) -> None:
    assert node.cfg.profile == "prod"
    assert get(node, "/health", "evil.example").status_code == 200


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost:6100", ("localhost", 6100)),
        ("LocalHost:6100", ("localhost", 6100)),
        ("[::1]:6100", ("::1", 6100)),
        ("[::1]", ("::1", 80)),
        ("example.org", ("example.org", 80)),
        ("localhost:6100:1", None),
        ("localhost:", None),
        ("localhost:+80", None),
        ("localhost:99999", None),
        (":6100", None),
        ("[::1:6100", None),
        ("a b:6100", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_host(value: str | None, parsed: tuple[str, int] | None) -> None:
    assert parse_host(value, default_port=80) == parsed


def test_dev_hosts_from_the_config(tmp_path: Path) -> None:
    from confman.api.access import DevHosts
    from tests.api.harness import single_node_config

    cfg = single_node_config(tmp_path, http_advertise="https://Dev.Example/")
    port = cfg.http_listen[1]
    hosts = DevHosts(cfg)
    assert hosts.allows("dev.example:443", None) and hosts.allows("dev.example", None, secure=True)
    assert not hosts.allows("dev.example", None)  # port 80
    assert hosts.allows(f"localhost:{port}", None) and not hosts.allows("localhost:1", None)
    assert hosts.allows("localhost:1", 1)  # the port the connection came in on
    odd = single_node_config(tmp_path, http_advertise="http://h:x/")  # no port: ignored
    assert DevHosts(odd).named == {("127.0.0.1", odd.http_listen[1])}
