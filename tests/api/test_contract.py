"""The v1 endpoints (docs/api.md) x every role (anonymous, viewer, editor, publisher, admin,
and an admin key scoped to another namespace): status and body, against a live single node. Every
response is also checked against the OpenAPI document by ``CheckedClient``."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.api.harness import KEYS, LiveNode, headers
from tests.api.spec import CheckedClient

ROLES = [None, "viewer", "editor", "publisher", "admin", "scoped"]
READERS = {"viewer", "editor", "publisher", "admin"}
WRITERS = {"editor", "publisher", "admin"}
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
NS = "ct"  # the namespace the table's rows read


def name_of(role: str) -> str:
    return f"{role} key"


def ids(role: str | None) -> str:
    return role or "anonymous"


@pytest.fixture(scope="module")
def seeded(node: LiveNode) -> Iterator[dict[str, object]]:
    with CheckedClient(base_url=node.url, timeout=20) as c:
        admin = headers("admin")
        ns = c.put(f"/api/v1/namespaces/{NS}", json={"description": "contract"}, headers=admin)
        assert ns.status_code in (200, 201)
        entry = c.put(f"/api/v1/namespaces/{NS}/config/k", json={"value": "v"}, headers=admin)
        assert entry.status_code in (200, 201)
        assert c.put("/api/v1/namespaces/other", headers=admin).status_code in (200, 201)
        c.put("/api/v1/namespaces/other/config/ok", json={"value": "1"}, headers=admin)
        yield {"namespace": ns.json(), "entry": entry.json()}


def expect_denied(role: str | None, allowed: set[str]) -> int | None:
    """The status a role outside ``allowed`` must get (None: the role is allowed)."""
    if role is None:
        return 401
    if role not in allowed:
        return 403
    return None


# -- anonymous endpoints ----------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_health(api: CheckedClient, role: str | None) -> None:
    r = api.get("/health", headers=headers(role))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and TS.match(body["timestamp"])


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_ready(api: CheckedClient, node: LiveNode, role: str | None) -> None:
    r = api.get("/health/ready", headers=headers(role))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    cluster = body["cluster"]
    assert cluster["nodeId"] == "node1" and cluster["role"] == "leader"
    assert cluster["leaderKnown"] is True and cluster["leader"] == node.cfg.http_advertise
    assert cluster["term"] >= 1 and cluster["appliedIndex"] <= cluster["commitIndex"]


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_metrics(api: CheckedClient, role: str | None) -> None:
    r = api.get("/metrics", headers=headers(role))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "confman_raft_term " in r.text and "confman_http_requests_total" in r.text


# -- namespaces -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_list_namespaces(api: CheckedClient, seeded: dict, role: str | None) -> None:
    r = api.get("/api/v1/namespaces", headers=headers(role))
    if role is None:
        assert r.status_code == 401
        return
    assert r.status_code == 200
    paths = [n["path"] for n in r.json()]
    assert paths == sorted(paths)
    if role == "scoped":
        assert paths == ["other"]
    else:
        assert {NS, "other"} <= set(paths)
        assert next(n for n in r.json() if n["path"] == NS) == seeded["namespace"]


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_get_namespace(api: CheckedClient, seeded: dict, role: str | None) -> None:
    r = api.get(f"/api/v1/namespaces/{NS}", headers=headers(role))
    denied = expect_denied(role, READERS)
    assert r.status_code == (denied or 200)
    if denied is None:
        assert r.json() == seeded["namespace"]
        assert r.headers["X-Confman-Role"] == "leader"
        assert int(r.headers["X-Confman-Index"]) >= 1
        assert r.headers["X-Confman-Last-Contact-Ms"] == "0"


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_put_namespace(api: CheckedClient, role: str | None) -> None:
    ns = f"put-{ids(role)}"
    body = {"description": "made by a test", "owner": "tests"}
    r = api.put(f"/api/v1/namespaces/{ns}", json=body, headers=headers(role))
    denied = expect_denied(role, {"admin"})
    if denied is not None:
        assert r.status_code == denied
        got = api.get(f"/api/v1/namespaces/{ns}", headers=headers("admin"))
        assert got.status_code == 404 and got.json()["title"] == "Namespace not found"
        return
    assert r.status_code == 201
    assert r.headers["Location"] == f"/api/v1/namespaces/{ns}"
    created = r.json()
    assert created["path"] == ns and created["description"] == "made by a test"
    assert created["owner"] == "tests" and TS.match(created["createdAt"])
    again = api.put(f"/api/v1/namespaces/{ns}", json={"owner": "x"}, headers=headers(role))
    assert again.status_code == 200 and "Location" not in again.headers
    assert again.json() == {**created, "description": None, "owner": "x"}
    assert int(again.headers["X-Confman-Index"]) > int(r.headers["X-Confman-Index"])


def test_namespace_owner_defaults_to_the_callers_key_name(api: CheckedClient) -> None:
    r = api.put("/api/v1/namespaces/owned-by-default", json={}, headers=headers("admin"))
    assert r.status_code in (200, 201) and r.json()["owner"] == "admin key"
    r = api.put("/api/v1/namespaces/owned-by-default", json={"owner": None},
                headers=headers("admin"))
    assert r.status_code == 200 and r.json()["owner"] == "admin key"
    r = api.put("/api/v1/namespaces/owned-by-default", json={"owner": "platform"},
                headers=headers("admin"))
    assert r.status_code == 200 and r.json()["owner"] == "platform"
    got = api.get("/api/v1/namespaces/owned-by-default", headers=headers("admin"))
    assert got.json()["owner"] == "platform"


def test_put_namespace_scoped_key_in_its_namespace(api: CheckedClient) -> None:
    r = api.put("/api/v1/namespaces/other", json={}, headers=headers("scoped"))
    # 201, or 200 when an earlier test on the same node created it
    assert r.status_code in (200, 201) and r.json()["path"] == "other"
    r = api.put("/api/v1/namespaces/other-x", json={}, headers=headers("scoped"))
    assert r.status_code == 403  # "other" does not cover "other-x"


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_delete_namespace(api: CheckedClient, role: str | None) -> None:
    ns = f"del-{ids(role)}"
    admin = headers("admin")
    assert api.put(f"/api/v1/namespaces/{ns}", headers=admin).status_code == 201
    assert api.put(f"/api/v1/namespaces/{ns}/config/a", json={"value": "1"}, headers=admin)
    r = api.delete(f"/api/v1/namespaces/{ns}", headers=headers(role))
    denied = expect_denied(role, {"admin"})
    if denied is not None:
        assert r.status_code == denied
        assert api.get(f"/api/v1/namespaces/{ns}/config/a", headers=admin).status_code == 200
        api.delete(f"/api/v1/namespaces/{ns}", headers=admin)
        return
    assert r.status_code == 204 and r.content == b""
    assert int(r.headers["X-Confman-Index"]) >= 1
    assert api.get(f"/api/v1/namespaces/{ns}", headers=admin).status_code == 404
    assert api.get(f"/api/v1/namespaces/{ns}/config/a", headers=admin).status_code == 404
    gone = api.delete(f"/api/v1/namespaces/{ns}", headers=headers(role))
    assert gone.status_code == 404 and gone.json()["title"] == "Namespace not found"


# -- configuration entries ---------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_list_entries(api: CheckedClient, seeded: dict, role: str | None) -> None:
    r = api.get(f"/api/v1/namespaces/{NS}/config", headers=headers(role))
    denied = expect_denied(role, READERS)
    assert r.status_code == (denied or 200)
    if denied is None:
        entries = r.json()
        assert [e["key"] for e in entries] == sorted(e["key"] for e in entries)
        assert seeded["entry"] in entries


def test_list_entries_of_missing_namespace(api: CheckedClient) -> None:
    r = api.get("/api/v1/namespaces/no-such-ns/config", headers=headers("viewer"))
    assert r.status_code == 404 and r.json()["title"] == "Namespace not found"


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_get_entry(api: CheckedClient, seeded: dict, role: str | None) -> None:
    r = api.get(f"/api/v1/namespaces/{NS}/config/k", headers=headers(role))
    denied = expect_denied(role, READERS)
    assert r.status_code == (denied or 200)
    if denied is None:
        assert r.json() == seeded["entry"]
        assert r.headers["ETag"] == f'"{seeded["entry"]["version"]}"'
    else:
        assert "v" not in r.json().values()  # nothing that reveals a value


def test_get_missing_entry(api: CheckedClient, seeded: dict) -> None:
    r = api.get(f"/api/v1/namespaces/{NS}/config/missing", headers=headers("viewer"))
    assert r.status_code == 404 and r.json()["title"] == "Configuration not found"
    assert "X-Confman-Index" in r.headers


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_put_entry(api: CheckedClient, seeded: dict, role: str | None) -> None:
    path = f"/api/v1/namespaces/{NS}/config/put-{ids(role)}"
    r = api.put(path, json={"value": "one", "type": "text"}, headers=headers(role))
    denied = expect_denied(role, WRITERS)
    if denied is not None:
        assert r.status_code == denied
        assert api.get(path, headers=headers("admin")).status_code == 404
        return
    assert r.status_code == 201 and r.headers["Location"] == path
    e = r.json()
    assert e == {
        "namespace": NS,
        "key": f"put-{role}",
        "value": "one",
        "type": "text",
        "version": 1,
        "updatedAt": e["updatedAt"],
        "updatedBy": name_of(role),  # type: ignore[arg-type]
    }
    assert TS.match(e["updatedAt"]) and r.headers["ETag"] == '"1"'
    r2 = api.put(path, json={"value": "two"}, headers=headers(role))
    assert r2.status_code == 200 and "Location" not in r2.headers
    assert r2.json()["version"] == 2 and r2.json()["type"] == "string"
    assert r2.headers["ETag"] == '"2"'
    assert int(r2.headers["X-Confman-Index"]) > int(r.headers["X-Confman-Index"])
    assert api.get(path, headers=headers("viewer")).json() == r2.json()


def test_put_entry_in_missing_namespace(api: CheckedClient) -> None:
    r = api.put("/api/v1/namespaces/nope/config/k", json={"value": "x"}, headers=headers("admin"))
    assert r.status_code == 404 and r.json()["title"] == "Namespace not found"


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_delete_entry(api: CheckedClient, seeded: dict, role: str | None) -> None:
    path = f"/api/v1/namespaces/{NS}/config/del-{ids(role)}"
    assert api.put(path, json={"value": "x"}, headers=headers("admin")).status_code == 201
    r = api.delete(path, headers=headers(role))
    denied = expect_denied(role, WRITERS)
    if denied is not None:
        assert r.status_code == denied
        assert api.get(path, headers=headers("admin")).status_code == 200
        return
    assert r.status_code == 204 and r.content == b""
    assert api.get(path, headers=headers("admin")).status_code == 404
    again = api.delete(path, headers=headers(role))
    assert again.status_code == 404 and again.json()["title"] == "Configuration not found"
    # re-created: version starts again at 1
    assert api.put(path, json={"value": "y"}, headers=headers(role)).json()["version"] == 1


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_audit(api: CheckedClient, seeded: dict, role: str | None) -> None:
    r = api.get(f"/api/v1/namespaces/{NS}/audit?limit=1000", headers=headers(role))
    denied = expect_denied(role, READERS)
    assert r.status_code == (denied or 200)
    if denied is not None:
        return
    events = r.json()
    assert events[-1]["action"] == "namespace.created"
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    first_entry = next(e for e in reversed(events) if e["key"] == "k")
    assert first_entry["action"] == "config.created" and first_entry["newValue"] == "v"
    assert first_entry["oldValue"] is None and first_entry["actor"] == "admin key"
    assert len(api.get(f"/api/v1/namespaces/{NS}/audit?limit=2", headers=headers(role)).json()) == 2


def test_audit_limit_is_clamped(api: CheckedClient, seeded: dict) -> None:
    h = headers("viewer")
    assert len(api.get(f"/api/v1/namespaces/{NS}/audit?limit=0", headers=h).json()) == 1
    assert len(api.get(f"/api/v1/namespaces/{NS}/audit?limit=-5", headers=h).json()) == 1
    default = api.get(f"/api/v1/namespaces/{NS}/audit", headers=h).json()
    big = api.get(f"/api/v1/namespaces/{NS}/audit?limit=5000", headers=h).json()
    assert len(default) == min(50, len(big)) and len(big) <= 1000


@pytest.mark.parametrize("role", ROLES, ids=ids)
def test_all_configs(api: CheckedClient, seeded: dict, role: str | None) -> None:
    r = api.get("/api/v1/configs", headers=headers(role))
    if role is None:
        assert r.status_code == 401  # fix: the original answered anonymous callers
        assert "value" not in r.text
        return
    assert r.status_code == 200
    entries = r.json()
    order = [(e["namespace"], e["key"]) for e in entries]
    assert order == sorted(order)
    namespaces = {e["namespace"] for e in entries}
    if role == "scoped":
        assert namespaces == {"other"}
    else:
        assert {NS, "other"} <= namespaces and seeded["entry"] in entries


def test_scoped_key_reads_and_writes_its_namespace(api: CheckedClient, seeded: dict) -> None:
    h = headers("scoped")
    assert api.get("/api/v1/namespaces/other", headers=h).status_code == 200
    assert api.put("/api/v1/namespaces/other/config/s", json={"value": "1"}, headers=h)
    assert api.get("/api/v1/namespaces/other/config/s", headers=h).json()["updatedBy"] == (
        "scoped key"
    )
    assert api.get("/api/v1/namespaces/other/audit", headers=h).status_code == 200
    assert api.delete("/api/v1/namespaces/other/config/s", headers=h).status_code == 204


def test_every_key_is_configured() -> None:
    assert set(KEYS) == {"admin", "editor", "publisher", "viewer", "scoped"}


def test_metric_labels_stay_bounded(api: CheckedClient) -> None:
    for method in ("PROPFIND", "MKCOL", "COPY"):  # methods the HTTP parser lets through
        assert api.request(method, "/health").status_code == 405
    text = api.get("/metrics").text
    assert "PROPFIND" not in text
    assert 'confman_http_requests_total{method="other",route="unmatched",status="405"}' in text
