"""Writes only on the leader: 307 from a follower, 503 without a leader, and the mapping of
every runtime failure; reads on followers and candidates; readiness. Uses FakeRuntime."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from confman.api import HttpServer, serve
from confman.node.errors import NodeStopped, NotLeader, ProposalDropped, ReplicationTimeout
from tests.api.fakes import LEADER_URL, FakeRuntime
from tests.api.harness import LoopThread, headers, single_node_config
from tests.api.spec import CheckedClient

WRITES = [
    ("PUT", "/api/v1/namespaces/app", {"description": "d"}, "admin"),
    ("DELETE", "/api/v1/namespaces/app", None, "admin"),
    ("PUT", "/api/v1/namespaces/app/config/k", {"value": "v2"}, "editor"),
    ("DELETE", "/api/v1/namespaces/app/config/k", None, "publisher"),
]


class FakeNode:
    def __init__(self, lt: LoopThread, tmp: Path, **cfg: object) -> None:
        self.lt = lt
        config = replace(single_node_config(tmp / "cfg"), **cfg)  # type: ignore[arg-type]
        self.rt: FakeRuntime = lt.call(lambda: FakeRuntime(config, tmp / "data"))
        self.rt.seed()
        self.server: HttpServer = lt.run(serve(self.rt, "127.0.0.1", 0))
        self.client = CheckedClient(base_url=self.server.url, timeout=10)

    def close(self) -> None:
        self.client.close()
        self.lt.run(self.server.stop())
        self.lt.call(self.rt.close)


@pytest.fixture(scope="module")
def lt() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def fake(lt: LoopThread, tmp_path: Path) -> Iterator[FakeNode]:
    node = FakeNode(lt, tmp_path)
    yield node
    node.close()


def problem(r: httpx.Response, status: int, title: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["title"] == title and body["status"] == status
    return body


# -- follower ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "role"), WRITES)
def test_follower_redirects_writes_to_the_leader(
    fake: FakeNode, method: str, path: str, body: dict | None, role: str
) -> None:
    r = fake.client.request(method, path + "?dryRun=1&x=%20", json=body, headers=headers(role))
    assert r.status_code == 307
    assert r.headers["Location"] == LEADER_URL.rstrip("/") + path + "?dryRun=1&x=%20"
    assert r.headers["X-Confman-Leader"] == "node2"
    assert fake.rt.proposals == []  # decided before reading the body or proposing


def test_follower_checks_the_caller_before_redirecting(fake: FakeNode) -> None:
    r = fake.client.put("/api/v1/namespaces/app/config/k", json={"value": "x"})
    problem(r, 401, "Unauthorized")
    r = fake.client.put(
        "/api/v1/namespaces/app/config/k", json={"value": "x"}, headers=headers("viewer")
    )
    problem(r, 403, "Forbidden")


def test_follower_serves_local_reads(fake: FakeNode) -> None:
    r = fake.client.get("/api/v1/namespaces/app/config/k", headers=headers("viewer"))
    assert r.status_code == 200 and r.json()["value"] == "v"
    assert r.headers["X-Confman-Role"] == "follower"
    assert r.headers["X-Confman-Last-Contact-Ms"] == "40"
    assert r.headers["X-Confman-Index"] == str(fake.rt.applied_index)
    r = fake.client.get("/api/v1/configs?consistency=linearizable", headers=headers("viewer"))
    assert r.status_code == 200 and len(r.json()) == 1


def test_follower_redirects_lease_reads(fake: FakeNode) -> None:
    r = fake.client.get("/api/v1/configs?consistency=lease", headers=headers("viewer"))
    assert r.status_code == 307
    assert r.headers["Location"] == LEADER_URL + "api/v1/configs?consistency=lease"


def test_follower_readiness(fake: FakeNode) -> None:
    r = fake.client.get("/health/ready")
    assert r.status_code == 200
    assert r.json()["cluster"] == {
        "nodeId": "node1",
        "role": "follower",
        "leaderKnown": True,
        "leader": LEADER_URL,
        "term": 7,
        "commitIndex": fake.rt.applied_index,
        "appliedIndex": fake.rt.applied_index,
        "members": [{"id": m.id, "http": m.http} for m in fake.rt.cfg.members],
    }
    fake.rt.ready = False  # e.g. out of contact with the leader
    r = fake.client.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "not_ready"
    assert fake.client.head("/health/ready").status_code == 503


# -- no leader -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "role"), WRITES)
def test_without_a_leader_writes_are_503(
    fake: FakeNode, method: str, path: str, body: dict | None, role: str
) -> None:
    fake.rt.role, fake.rt.leader_id, fake.rt.leader_url = "candidate", None, None
    r = fake.client.request(method, path, json=body, headers=headers(role))
    problem(r, 503, "No leader available")
    assert r.headers["Retry-After"] == "1"


def test_without_a_leader_reads_work_and_readiness_says_no(fake: FakeNode) -> None:
    fake.rt.role, fake.rt.leader_id, fake.rt.leader_url = "candidate", None, None
    fake.rt.ready = False
    r = fake.client.get("/api/v1/namespaces/app", headers=headers("viewer"))
    assert r.status_code == 200 and r.headers["X-Confman-Role"] == "candidate"
    r = fake.client.get(
        "/api/v1/namespaces/app?consistency=linearizable", headers=headers("viewer")
    )
    problem(r, 503, "No leader available")
    r = fake.client.get("/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert body["cluster"]["leaderKnown"] is False and body["cluster"]["leader"] is None


def test_leader_without_an_address_is_503(fake: FakeNode) -> None:
    fake.rt.leader_url = None
    r = fake.client.put("/api/v1/namespaces/app", headers=headers("admin"))
    assert "node2" in problem(r, 503, "No leader available")["detail"]


# -- failures of a leader's proposal ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "title"),
    [
        (ReplicationTimeout("not confirmed in 10s"), 503, "Replication timed out"),
        (ProposalDropped("replaced by a new leader"), 503, "Write not committed"),
        (NodeStopped("stopping"), 503, "Node stopping"),
    ],
)
@pytest.mark.parametrize(("method", "path", "body", "role"), WRITES)
def test_leader_failures_map_to_problems(
    fake: FakeNode,
    method: str,
    path: str,
    body: dict | None,
    role: str,
    error: Exception,
    status: int,
    title: str,
) -> None:
    fake.rt.role, fake.rt.error = "leader", error
    r = fake.client.request(method, path, json=body, headers=headers(role))
    problem(r, status, title)
    assert r.headers["Retry-After"] == "1"
    assert len(fake.rt.proposals) == 1
    proposal = fake.rt.proposals[0]
    assert proposal.actor == f"{role} key"
    assert proposal.idempotency_key is None
    assert proposal.idempotency_ttl_s == fake.rt.cfg.idempotency_ttl_s


def test_leadership_lost_while_proposing_redirects(fake: FakeNode) -> None:
    fake.rt.role, fake.rt.error = "leader", NotLeader("node3", "http://127.0.0.1:6300/")
    r = fake.client.put(
        "/api/v1/namespaces/app/config/k?a=b", json={"value": "x"}, headers=headers("admin")
    )
    assert r.status_code == 307
    assert r.headers["Location"] == "http://127.0.0.1:6300/api/v1/namespaces/app/config/k?a=b"


def test_unexpected_error_is_a_500_problem_with_a_logged_traceback(
    fake: FakeNode, caplog: pytest.LogCaptureFixture
) -> None:
    fake.rt.role, fake.rt.error = "leader", RuntimeError("disk on fire")
    with caplog.at_level(logging.ERROR, logger="confman.api"):
        r = httpx.put(
            fake.server.url + "/api/v1/namespaces/app",
            headers={**headers("admin"), "X-Correlation-Id": "trace-500"},
        )
    assert r.status_code == 500
    body = r.json()
    assert body["traceId"] == "trace-500" == r.headers["X-Correlation-Id"]
    assert "disk on fire" not in r.text  # no internals leak
    record = next(rec for rec in caplog.records if rec.name == "confman.api")
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])
    assert record.fields["correlationId"] == "trace-500"  # type: ignore[attr-defined]


def test_reads_while_a_snapshot_installs_are_503(fake: FakeNode) -> None:
    reader, fake.rt.reader = fake.rt.reader, None
    try:
        r = fake.client.get("/api/v1/namespaces", headers=headers("viewer"))
        problem(r, 503, "State unavailable")
        assert r.headers["Retry-After"] == "1"
    finally:
        fake.rt.reader = reader


def test_min_index_not_reached_is_504(fake: FakeNode) -> None:
    n = fake.rt.applied_index
    h = headers("viewer")
    assert fake.client.get(f"/api/v1/configs?minIndex={n}", headers=h).status_code == 200
    r = fake.client.get("/api/v1/configs", headers={**h, "X-Confman-Min-Index": str(n + 1)})
    problem(r, 504, "Read timed out")


# -- CORS ------------------------------------------------------------------------------------

ORIGIN = "https://ui.example"


@pytest.fixture
def cors_node(lt: LoopThread, tmp_path: Path) -> Iterator[FakeNode]:
    node = FakeNode(lt, tmp_path, cors_origins=(ORIGIN,))
    yield node
    node.close()


def test_cors_preflight_for_an_allowed_origin(cors_node: FakeNode) -> None:
    r = cors_node.client.options(
        "/api/v1/namespaces/app/config/k",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"},
    )
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert set(r.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "PUT", "DELETE"}
    assert "X-Api-Key" in r.headers["Access-Control-Allow-Headers"]
    assert "Origin" in r.headers["Vary"]


def test_cors_refuses_other_origins(cors_node: FakeNode) -> None:
    r = cors_node.client.options(
        "/api/v1/configs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    problem(r, 403, "Origin not allowed")
    assert "Access-Control-Allow-Origin" not in r.headers
    r = cors_node.client.get(
        "/api/v1/configs", headers={**headers("viewer"), "Origin": "https://evil.example"}
    )
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_cors_headers_on_responses_to_allowed_origins(cors_node: FakeNode) -> None:
    r = cors_node.client.get("/api/v1/configs", headers={**headers("viewer"), "Origin": ORIGIN})
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    r = cors_node.client.get("/api/v1/configs", headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = cors_node.client.options(
        "/nowhere", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 404


def test_cors_is_off_by_default(fake: FakeNode) -> None:
    r = fake.client.options(
        "/api/v1/configs", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 405 and "Access-Control-Allow-Origin" not in r.headers
    r = fake.client.get("/api/v1/configs", headers={**headers("viewer"), "Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers
