"""Idempotency keys are scoped per caller (issue 14, finding 7): one API key's
``Idempotency-Key`` never collides with another's, so a tenant can neither block another's
key (422) nor learn that it was used, nor be handed another caller's result."""

from __future__ import annotations

import uuid

import httpx
import pytest

from confman.api.writes import scoped_idempotency_key
from tests.api.harness import LiveNode, headers

NS = "idem-scope"


@pytest.fixture(scope="module", autouse=True)
def namespace(node: LiveNode) -> None:
    r = node.client.put(f"/api/v1/namespaces/{NS}", headers=headers("admin"))
    assert r.status_code in (200, 201)


def put(node: LiveNode, role: str, key: str, value: str, idem: str) -> tuple[int, httpx.Headers]:
    r = node.client.put(
        f"/api/v1/namespaces/{NS}/config/{key}",
        json={"value": value},
        headers={**headers(role), "Idempotency-Key": idem},
    )
    return r.status_code, r.headers


def test_another_caller_cannot_block_a_key_with_a_different_request(node: LiveNode) -> None:
    idem = str(uuid.uuid4())
    status, _ = put(node, "editor", "a", "editor's", idem)
    assert status in (200, 201)
    status, hdrs = put(node, "publisher", "b", "publisher's", idem)
    assert status in (200, 201), "the publisher's own key space knows nothing of the editor's"
    assert "X-Confman-Replayed-From" not in hdrs


def test_the_same_request_by_another_caller_is_not_a_replay(node: LiveNode) -> None:
    idem = str(uuid.uuid4())
    status, first = put(node, "editor", "same", "v", idem)
    assert status in (200, 201) and "X-Confman-Replayed-From" not in first
    status, second = put(node, "publisher", "same", "v", idem)
    assert status == 200 and "X-Confman-Replayed-From" not in second
    assert int(second["X-Confman-Index"]) > int(first["X-Confman-Index"])


def test_a_caller_still_replays_and_is_refused_within_its_own_scope(node: LiveNode) -> None:
    idem = str(uuid.uuid4())
    status, first = put(node, "editor", "own", "v", idem)
    assert status in (200, 201)
    status, again = put(node, "editor", "own", "v", idem)
    assert status in (200, 201)
    assert again["X-Confman-Replayed-From"] == first["X-Confman-Index"]
    put(node, "publisher", "own", "p", idem)  # another scope: does not disturb the editor's
    status, retry = put(node, "editor", "own", "v", idem)
    assert status in (200, 201)
    assert retry["X-Confman-Replayed-From"] == first["X-Confman-Index"]
    status, _ = put(node, "editor", "own", "other value", idem)
    assert status == 422


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("ops", "k1"), ("ops", "k2")),
        (("ops", "k1"), ("dev", "k1")),
        (("a", "b:c"), ("a:b", "c")),
        (("a", "1:b"), ("a1", "b")),
        (("", "x"), ("x", "")),
    ],
)
def test_scoped_keys_never_collide(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert scoped_idempotency_key(*a) != scoped_idempotency_key(*b)
    assert scoped_idempotency_key(*a) == scoped_idempotency_key(*a)
