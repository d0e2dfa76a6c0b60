"""The API key goes only to the configured endpoints and the members they advertise, on the
same scheme: a leader hint or a 307 that points elsewhere (or from https to http) is an
error naming the host, and the foreign host never sees the key (issue 14, finding 4)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest
import trustme

from confman.client import Client, UntrustedEndpoint
from confman.client.plan import Endpoints
from tests.client.fakes import FakeNodes, answer_entry, redirecting

KEY = "confman_secret_key_for_the_fake"


@pytest.fixture
def fakes() -> Iterator[FakeNodes]:
    f = FakeNodes()
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def trusting(ca: trustme.CA) -> httpx.HTTPTransport:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return httpx.HTTPTransport(verify=ctx)


def test_a_hint_and_a_307_to_a_foreign_host_never_carry_the_key(fakes: FakeNodes) -> None:
    foreign = fakes.add(answer_entry)
    node = fakes.add(redirecting(lambda: foreign.url))
    with Client([node.url], KEY, retry_timeout=2) as c:
        with pytest.raises(UntrustedEndpoint, match=f"127.0.0.1:{foreign.port}"):
            c.put("n", "k", "v")  # the leader hint of /health/ready names the foreign host
        with pytest.raises(UntrustedEndpoint, match=f"127.0.0.1:{foreign.port}"):
            c.get("n", "k")  # a plain read answered 307 there
    assert node.keys_seen and set(node.keys_seen) == {KEY}
    assert foreign.keys_seen == []


def test_https_to_http_downgrade_is_refused(fakes: FakeNodes, ca: trustme.CA) -> None:
    plain = fakes.add(answer_entry)
    # an https node that advertises, names as leader and redirects to an http member
    secure = fakes.add(
        redirecting(lambda: plain.url, lambda: [secure.url, plain.url]), server_context(ca)
    )
    with Client([secure.url], KEY, retry_timeout=2, transport=trusting(ca)) as c:
        with pytest.raises(UntrustedEndpoint, match=f"127.0.0.1:{plain.port}"):
            c.get("n", "k")
        with pytest.raises(UntrustedEndpoint, match=f"127.0.0.1:{plain.port}"):
            c.put("n", "k", "v")
    assert secure.keys_seen and plain.keys_seen == []


def test_advertised_members_on_the_same_scheme_are_followed_with_the_key(
    fakes: FakeNodes,
) -> None:
    leader = fakes.add(answer_entry)
    node = fakes.add(redirecting(lambda: leader.url, lambda: [node.url, leader.url]))
    with Client([node.url], KEY, retry_timeout=2) as c:
        assert c.put("n", "k", "v").version == 1
        assert c.get("n", "k").value == "v"
    assert leader.keys_seen == [KEY, KEY]


def test_vetting_rules() -> None:
    ep = Endpoints.parse("https://a:1,https://b")
    assert ep.vet("https://A:1/", "https://b") == "https://A:1/"  # host case, trailing slash
    assert ep.vet("https://b:443", "https://a:1") == "https://b:443"  # default port
    for url, why in [
        ("http://a:1", "downgrade"),
        ("https://c:1", "neither"),
        ("https://a:2", "neither"),
        ("ftp://a:1", "not an http"),
    ]:
        with pytest.raises(UntrustedEndpoint, match=why):
            ep.vet(url, "https://a:1")
    advertised = {"cluster": {"members": [{"http": "https://c:1/"}, "http://d:1", "https://e"]}}
    ep.learn("https://x:1", advertised)  # not a configured endpoint: ignored
    assert not ep.trusted("https://c:1")
    ep.learn("https://a:1", advertised)
    assert ep.trusted("https://c:1") and ep.trusted("https://e:443")
    assert not ep.trusted("http://d:1")  # another scheme than its advertiser's
