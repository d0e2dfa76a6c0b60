"""Hostile input: oversized and chunked bodies, bad UTF-8 and JSON, duplicate keys, deep
nesting, wrong types and content types, traversal-like names, malformed HTTP. Never a 5xx;
always a problem naming what is wrong."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confman.api.logs import malformed_reason
from tests.api.harness import LiveNode, headers, wait_for
from tests.api.spec import CheckedClient, check_response

NS = "hostile"
ENTRY = f"/api/v1/namespaces/{NS}/config/k"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", autouse=True)
def namespace(node: LiveNode) -> None:
    r = httpx.put(f"{node.url}/api/v1/namespaces/{NS}", headers=headers("admin"))
    assert r.status_code in (200, 201)


def put_raw(api: httpx.Client, body: bytes, **extra: str) -> httpx.Response:
    return api.put(ENTRY, content=body, headers={**headers("editor"), **JSON, **extra})


def problem(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    if field is not None:
        assert body.get("field") == field, body
        assert field in body["detail"]
    return body


# -- bodies ----------------------------------------------------------------------------


def test_body_over_the_limit_is_413_without_reading_it(api: CheckedClient, node: LiveNode) -> None:
    limit = node.cfg.max_body_bytes
    big = b'{"value":"' + b"x" * limit + b'"}'
    problem(put_raw(api, big), 413)


def test_chunked_body_over_the_limit_is_413(api: CheckedClient, node: LiveNode) -> None:
    limit = node.cfg.max_body_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"value":"'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    r = api.put(ENTRY, content=chunks(), headers={**headers("editor"), **JSON})
    assert "Content-Length" not in r.request.headers
    problem(r, 413)


def test_body_at_the_limit_is_accepted(api: CheckedClient, node: LiveNode) -> None:
    limit = node.cfg.max_body_bytes
    body = b'{"value":"' + b"z" * (limit - 12) + b'"}'
    assert len(body) == limit
    r = put_raw(api, body)
    assert r.status_code in (200, 201) and len(r.json()["value"]) == limit - 12


def test_namespace_body_over_the_limit_is_413(api: CheckedClient, node: LiveNode) -> None:
    body = b" " * (node.cfg.max_body_bytes + 1)
    r = api.put(f"/api/v1/namespaces/{NS}", content=body, headers={**headers("admin"), **JSON})
    problem(r, 413)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"value": "\xff\xfe"}', "body"),  # invalid UTF-8
        (b'{"value": "\xed\xa0\x80"}', "body"),  # UTF-8-encoded surrogate
        (b'{"value": "\\ud800"}', "body"),  # lone surrogate escape
        (b'{"value": "x",}', "body"),
        (b'{"value": NaN}', "body"),
        (b"\xef\xbb\xbf{}", "body"),  # BOM
        (b"", "body"),
        (b"   ", "body"),
        (b"null", "body"),
        (b'["value"]', "body"),
        (b'"value"', "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"value": ' + b"[" * 1000 + b"]" * 1000 + b', "value": "x"}', "body"),
        (b'{"value": "a", "value": "b"}', "value"),
        (b'{"value": "a", "type": "t", "type": "t"}', "type"),
        (b"{}", "value"),
        (b'{"value": null}', "value"),
        (b'{"value": 1}', "value"),
        (b'{"value": true}', "value"),
        (b'{"value": {"a": 1}}', "value"),
        (b'{"value": ["a"]}', "value"),
        (b'{"value": "a", "type": ""}', "type"),
        (b'{"value": "a", "type": 5}', "type"),
        (b'{"value": "a", "type": "' + b"t" * 65 + b'"}', "type"),
    ],
)
def test_malformed_entry_bodies_are_400_naming_the_field(
    api: CheckedClient, body: bytes, field: str
) -> None:
    problem(put_raw(api, body), 400, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"description": 1}', "description"),
        (b'{"owner": ["x"]}', "owner"),
        (b'{"owner": "a", "owner": "b"}', "owner"),
        (b"[]", "body"),
        (b"{", "body"),
    ],
)
def test_malformed_namespace_bodies_are_400(api: CheckedClient, body: bytes, field: str) -> None:
    r = api.put(f"/api/v1/namespaces/{NS}", content=body, headers={**headers("admin"), **JSON})
    problem(r, 400, field)


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "application/xml",
    ],
)
def test_wrong_content_type_is_415(api: CheckedClient, ctype: str | None) -> None:
    h = headers("editor")
    if ctype is not None:
        h["Content-Type"] = ctype
    r = api.put(ENTRY, content=b'{"value": "x"}', headers=h)
    problem(r, 415)


def test_json_with_utf8_charset_and_json_suffix_types_are_accepted(api: CheckedClient) -> None:
    for ctype in ("application/json; charset=UTF-8", "application/merge-patch+json"):
        r = put_raw(api, b'{"value": "ok"}', **{"Content-Type": ctype})
        assert r.status_code in (200, 201)


def test_namespace_put_without_body_needs_no_content_type(api: CheckedClient) -> None:
    r = api.put(f"/api/v1/namespaces/{NS}-nobody", headers=headers("admin"))
    assert r.status_code == 201 and r.json()["description"] is None


def test_unknown_members_are_ignored(api: CheckedClient) -> None:
    r = put_raw(api, b'{"value": "v", "extra": {"deep": [1, 2]}, "version": 99}')
    assert r.status_code in (200, 201) and r.json()["version"] != 99


@pytest.mark.parametrize(
    "value",
    [
        "",
        "héllo wörld",
        "日本語の設定",
        "emoji 🎉🚀",
        "rtl \u202e txt",
        "nul \u0000 byte",
        "line\nbreak\ttab",
        '"quotes" and \\backslash\\',
        "\U0010ffff",
        "x" * 10_000,
    ],
)
def test_unicode_values_round_trip(api: CheckedClient, value: str) -> None:
    path = f"/api/v1/namespaces/{NS}/config/unicode"
    r = api.put(path, json={"value": value, "type": "tÿpe ✓"}, headers=headers("editor"))
    assert r.status_code in (200, 201)
    got = api.get(path, headers=headers("viewer")).json()
    assert got["value"] == value and got["type"] == "tÿpe ✓"


# -- names and paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_path",
    [
        "/api/v1/namespaces/%2e%2e/config",
        "/api/v1/namespaces/%2E/config/k",
        "/api/v1/namespaces/hostile/config/%2e%2e",
        "/api/v1/namespaces/..%2f..%2fetc/config",
        "/api/v1/namespaces/hostile/config/..%2F..%2Fstate.db",
        "/api/v1/namespaces/hostile/config/a%00b",
        "/api/v1/namespaces/hostile/config/%C3%A9",
        "/api/v1/namespaces/hostile/config/%ff",
        "/api/v1/namespaces/hostile/config/" + "k" * 129,
        "/api/v1/namespaces/hostile/config/a%20b",
        "/api/v1/namespaces/hostile%2Fconfig/k",
        "/api/v1/namespaces//config/k",
        "/api/v1/namespaces/hostile/config/",
        "/api/v1/namespaces/hostile/config/k/",
        "/api/v1/namespaces/hostile/config/k/extra",
        "/api/v1//namespaces",
        "/../../../etc/passwd",
        "/docs/..%2F..%2Fopenapi.json",
        "/docs/%2e%2e%2fapp.py",
        "/docs/app.py",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_traversal_like_paths_reach_nothing(api: CheckedClient, raw_path: str, method: str) -> None:
    url = httpx.URL(api.base_url).copy_with(raw_path=raw_path.encode())
    r = api.request(method, url, json={"value": "x"}, headers=headers("admin"))
    assert r.status_code in (400, 404, 405), (raw_path, r.status_code, r.text)
    body = r.json()
    if r.status_code == 400:
        assert body["field"] in ("ns", "key")
    assert "x" * 3 not in r.text and "passwd" not in body.get("detail", "")[:0]


def test_name_of_128_characters_is_fine(api: CheckedClient) -> None:
    path = f"/api/v1/namespaces/{NS}/config/{'k' * 128}"
    assert api.put(path, json={"value": "x"}, headers=headers("editor")).status_code == 201


# -- parameters and headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"/api/v1/namespaces/{NS}/audit?limit=abc", "limit"),
        (f"/api/v1/namespaces/{NS}/audit?limit=1.5", "limit"),
        (f"/api/v1/namespaces/{NS}/audit?limit=" + "9" * 5000, "limit"),
        (f"/api/v1/namespaces/{NS}/audit?limit=%EF%BC%95", "limit"),  # fullwidth digit
        ("/api/v1/configs?consistency=strong", "consistency"),
        ("/api/v1/configs?minIndex=-1", "minIndex"),
        ("/api/v1/configs?minIndex=x", "minIndex"),
        ("/api/v1/configs?minIndex=9223372036854775808", "minIndex"),
        (f"/api/v1/namespaces/{NS}/audit?limit=-9223372036854775809", "limit"),
    ],
)
def test_bad_query_parameters_are_400(api: CheckedClient, path: str, field: str) -> None:
    problem(api.get(path, headers=headers("viewer")), 400, field)


@pytest.mark.parametrize(
    ("header", "value", "field"),
    [
        ("If-Match", "3", "If-Match"),
        ("If-Match", "", "If-Match"),
        ("If-Match", '"a"', "If-Match"),
        ("If-Match", 'W/"1"', "If-Match"),
        ("If-Match", '"1", "2"', "If-Match"),
        ("If-None-Match", '"1"', "If-None-Match"),
        ("Idempotency-Key", "has space", "Idempotency-Key"),
        ("Idempotency-Key", "k" * 256, "Idempotency-Key"),
    ],
)
def test_bad_write_headers_are_400(api: CheckedClient, header: str, value: str, field: str) -> None:
    r = api.put(ENTRY, json={"value": "x"}, headers={**headers("editor"), header: value})
    problem(r, 400, field)


def test_bad_read_headers_are_400(api: CheckedClient) -> None:
    h = headers("viewer")
    problem(api.get(ENTRY, headers={**h, "If-None-Match": "nope"}), 400, "If-None-Match")
    r = api.get("/api/v1/configs", headers={**h, "X-Confman-Consistency": "x"})
    problem(r, 400, "consistency")
    r = api.get("/api/v1/configs", headers={**h, "X-Confman-Min-Index": "?"})
    problem(r, 400, "X-Confman-Min-Index")


@pytest.mark.parametrize(
    "key", ["wrong", "", "x" * 5000, "test-admin-keyx", "TEST-ADMIN-KEY", "ключ", "\udcff"]
)
def test_bad_api_keys_are_401(api: CheckedClient, key: str) -> None:
    raw = key.encode("utf-8", "surrogateescape")
    r = api.get("/api/v1/configs", headers={"X-Api-Key": raw})
    body = problem(r, 401)
    assert "WWW-Authenticate" in r.headers and body["title"] == "Unauthorized"


_ENTRY_GET = f"/api/v1/namespaces/{NS}/config/dup"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/configs"), ("PUT", f"/api/v1/namespaces/{NS}"), ("GET", _ENTRY_GET)],
)
@pytest.mark.parametrize("second", ["test-viewer-key", "test-admin-key", "unknown"])
def test_duplicate_api_key_header_is_400(
    api: CheckedClient, method: str, path: str, second: str
) -> None:
    api.put(_ENTRY_GET, json={"value": "v"}, headers=headers("admin"))  # a fast-path GET too
    pairs = [("X-Api-Key", "test-admin-key"), ("X-Api-Key", second)]
    r = api.request(method, path, headers=pairs)
    problem(r, 400, "X-Api-Key")
    assert "once" in r.json()["detail"]


def test_correlation_id_is_echoed_or_replaced(api: CheckedClient) -> None:
    r = api.get("/health", headers={"X-Correlation-Id": "req-42.abc"})
    assert r.headers["X-Correlation-Id"] == "req-42.abc"
    for bad in ("has space", "x" * 129, "semi;colon", "<script>"):
        r = api.get("/nope", headers={"X-Correlation-Id": bad})
        cid = r.headers["X-Correlation-Id"]
        assert cid != bad and r.json()["traceId"] == cid and len(cid) == 32


def test_unknown_path_and_wrong_method(api: CheckedClient) -> None:
    body = problem(api.get("/api/v2/namespaces"), 404)
    assert body["instance"] == "/api/v2/namespaces"
    r = api.post("/api/v1/namespaces/x", headers=headers("admin"))
    problem(r, 405)
    assert set(r.headers["Allow"].split(", ")) == {"GET", "PUT", "DELETE"}
    r = api.request("PATCH", ENTRY, headers=headers("admin"))
    problem(r, 405)
    problem(api.request("OPTIONS", "/api/v1/configs"), 405)  # CORS is off


# -- below the application: malformed HTTP -----------------------------------------------


def raw_exchange(node: LiveNode, data: bytes) -> httpx.Response:
    """Send ``data`` as is; parse the one response."""
    host, port = node.server.host, node.server.port  # type: ignore[union-attr]
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = dict(line.split(": ", 1) for line in lines[1:])
    return httpx.Response(
        status, headers=hdrs, content=body, request=httpx.Request("GET", "http://x/health")
    )


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /api/v1/namespaces/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"PUT /api/v1/namespaces/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_http_gets_a_problem(node: LiveNode, data: bytes) -> None:
    r = raw_exchange(node, data)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == r.status_code and body["traceId"] == r.headers["X-Correlation-Id"]


@pytest.mark.parametrize(
    "data",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Api-Key: s3cr3t-key\x01\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Api-Key: s3cr3t\n-key\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Api-Key: s3cr3t-key\x00\r\n\r\n",
        b"\x16\x03\x01s3cr3t-key\r\n\r\n",
    ],
)
def test_malformed_requests_are_logged_at_debug_without_their_bytes(
    node: LiveNode, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = raw_exchange(node, data)
    assert r.status_code == 400 and "s3cr3t" not in r.text
    wait_for(lambda: any("malformed" in rec.getMessage() for rec in caplog.records), 5, "log")
    for rec in caplog.records:
        text = rec.getMessage() + (
            logging.Formatter().formatException(rec.exc_info) if rec.exc_info else ""
        )
        assert "s3cr3t" not in text, (rec.name, text)
        assert rec.levelno < logging.WARNING or not rec.name.startswith(("aiohttp", "confman")), (
            rec.name,
            text,
        )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Invalid header value char:\n\n  b'X-Api-Key: k\\x01'\n   ^", "Invalid header value char"),
        (
            "Got more than 8190 bytes when reading: bytearray(b'aaaa')",
            "Got more than 8190 bytes when reading",
        ),
        ("Bad status line 'key\x01'", "Bad status line"),
        ("'only a quote'", "Malformed HTTP request"),
        ("k\u00e9y", "Malformed HTTP request"),
        (None, "Malformed HTTP request"),
    ],
)
def test_malformed_reason_drops_quoted_input(message: str | None, reason: str) -> None:
    assert malformed_reason(message) == reason


# -- property: anything goes in, no 5xx comes out -------------------------------------------

_names = st.text(min_size=0, max_size=140)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    ).map(lambda v: httpx.Request("PUT", "http://x", json=v).content),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ns=_names,
    key=_names,
    body=_bodies,
    role=st.sampled_from([None, "viewer", "editor", "admin", "scoped"]),
    method=st.sampled_from(["GET", "PUT", "DELETE"]),
)
def test_no_input_gives_a_5xx(
    node: LiveNode, ns: str, key: str, body: bytes, role: str | None, method: str
) -> None:
    from urllib.parse import quote

    path = f"/api/v1/namespaces/{quote(ns, safe='')}/config/{quote(key, safe='')}"
    r = node.client.request(method, path, content=body, headers={**headers(role), **JSON})
    assert r.status_code < 500, (path, body, r.text)
    assert check_response(r) == []
