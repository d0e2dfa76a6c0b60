"""Conditional requests (If-Match, If-None-Match), idempotency keys and read consistency
levels on a live node."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest

from tests.api.harness import LiveNode, headers, wait_for
from tests.api.spec import CheckedClient

NS = "cond"
ED = headers("editor")


@pytest.fixture(scope="module", autouse=True)
def namespace(node: LiveNode) -> None:
    assert httpx.put(f"{node.url}/api/v1/namespaces/{NS}", headers=headers("admin")).is_success


def entry(key: str) -> str:
    return f"/api/v1/namespaces/{NS}/config/{key}"


def test_if_none_match_star_creates_only(api: CheckedClient) -> None:
    path = entry("create-only")
    r = api.put(path, json={"value": "a"}, headers={**ED, "If-None-Match": "*"})
    assert r.status_code == 201
    r = api.put(path, json={"value": "b"}, headers={**ED, "If-None-Match": "*"})
    assert r.status_code == 412 and r.headers["ETag"] == '"1"'
    assert api.get(path, headers=ED).json()["value"] == "a"


def test_if_match_is_compare_and_set(api: CheckedClient) -> None:
    path = entry("cas")
    assert api.put(path, json={"value": "1"}, headers=ED).status_code == 201
    r = api.put(path, json={"value": "2"}, headers={**ED, "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["ETag"] == '"2"'
    stale = api.put(path, json={"value": "x"}, headers={**ED, "If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["ETag"] == '"2"'
    assert "expected 1, current 2" in stale.json()["detail"]
    assert api.get(path, headers=ED).json()["value"] == "2"
    missing = api.put(entry("cas-missing"), json={"value": "x"}, headers={**ED, "If-Match": '"1"'})
    assert missing.status_code == 412 and "ETag" not in missing.headers


def test_if_match_star_needs_an_existing_entry(api: CheckedClient) -> None:
    path = entry("star")
    r = api.put(path, json={"value": "x"}, headers={**ED, "If-Match": "*"})
    assert (
        r.status_code == 412 and r.json()["detail"] == "Configuration does not exist (If-Match: *)"
    )
    assert api.get(path, headers=ED).status_code == 404
    assert api.put(path, json={"value": "1"}, headers=ED).status_code == 201
    r = api.put(path, json={"value": "2"}, headers={**ED, "If-Match": "*"})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert api.delete(path, headers={**ED, "If-Match": "*"}).status_code == 204
    assert api.delete(path, headers={**ED, "If-Match": "*"}).status_code == 412


def test_delete_with_if_match(api: CheckedClient) -> None:
    path = entry("del")
    api.put(path, json={"value": "1"}, headers=ED)
    api.put(path, json={"value": "2"}, headers=ED)
    r = api.delete(path, headers={**ED, "If-Match": '"1"'})
    assert r.status_code == 412 and r.headers["ETag"] == '"2"'
    assert api.delete(path, headers={**ED, "If-Match": '"2"'}).status_code == 204


def test_get_with_if_none_match(api: CheckedClient) -> None:
    path = entry("etag")
    api.put(path, json={"value": "1"}, headers=ED)
    api.put(path, json={"value": "2"}, headers=ED)
    for value in ('"2"', 'W/"2"', '"1", "2"', "*"):
        r = api.get(path, headers={**ED, "If-None-Match": value})
        assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == '"2"'
    r = api.get(path, headers={**ED, "If-None-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2


def test_idempotency_key_replays_the_first_result(api: CheckedClient) -> None:
    path = entry("idem")
    key = str(uuid.uuid4())
    first = api.put(path, json={"value": "once"}, headers={**ED, "Idempotency-Key": key})
    assert first.status_code == 201 and "X-Confman-Replayed-From" not in first.headers
    again = api.put(path, json={"value": "once"}, headers={**ED, "Idempotency-Key": key})
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["X-Confman-Replayed-From"] == first.headers["X-Confman-Index"]
    assert again.headers["ETag"] == '"1"'
    assert api.get(path, headers=ED).json()["version"] == 1  # applied once
    other = api.put(path, json={"value": "different"}, headers={**ED, "Idempotency-Key": key})
    assert other.status_code == 422 and other.json()["title"] == "Idempotency key reused"
    as_admin = api.put(
        path, json={"value": "once"}, headers={**headers("admin"), "Idempotency-Key": key}
    )
    # Keys are scoped per caller: another caller's same key is a new request, not a replay.
    assert as_admin.status_code == 200 and "X-Confman-Replayed-From" not in as_admin.headers
    assert as_admin.headers["ETag"] == '"2"'


def test_idempotent_namespace_delete(api: CheckedClient) -> None:
    admin = headers("admin")
    api.put("/api/v1/namespaces/idem-ns", headers=admin)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.delete("/api/v1/namespaces/idem-ns", headers={**admin, **key})
    assert first.status_code == 204
    again = api.delete("/api/v1/namespaces/idem-ns", headers={**admin, **key})
    assert again.status_code == 204 and "X-Confman-Replayed-From" in again.headers
    assert api.delete("/api/v1/namespaces/idem-ns", headers=admin).status_code == 404


@pytest.mark.parametrize("level", ["local", "linearizable", "lease"])
def test_consistency_levels_read_own_writes_on_the_leader(api: CheckedClient, level: str) -> None:
    path = entry(f"read-{level}")
    w = api.put(path, json={"value": level}, headers=ED)
    r = api.get(path, params={"consistency": level}, headers=ED)
    assert r.status_code == 200 and r.json()["value"] == level
    assert int(r.headers["X-Confman-Index"]) >= int(w.headers["X-Confman-Index"])
    r = api.get(path, headers={**ED, "X-Confman-Consistency": level})
    assert r.status_code == 200


def test_min_index_waits_for_the_write(api: CheckedClient, node: LiveNode) -> None:
    path = entry("waited")
    index = int(api.put(path, json={"value": "old"}, headers=ED).headers["X-Confman-Index"])
    result: dict[str, httpx.Response] = {}

    def read() -> None:
        with httpx.Client(base_url=node.url, timeout=20) as c:
            result["r"] = c.get(path, params={"minIndex": index + 1}, headers=ED)

    reader = threading.Thread(target=read)
    reader.start()
    # the read is parked on the runtime until the index is applied
    wait_for(lambda: node.lt.call(lambda: len(node.rt._applied_waiters)) > 0, 10, "the waiter")
    assert reader.is_alive()
    w = api.put(path, json={"value": "new"}, headers=ED)
    reader.join(10)
    r = result["r"]
    assert r.status_code == 200 and r.json()["value"] == "new"
    assert int(r.headers["X-Confman-Index"]) >= int(w.headers["X-Confman-Index"]) == index + 1
