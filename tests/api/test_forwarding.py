"""Write forwarding: a follower (FakeRuntime) proxies writes to the live leader node instead
of answering 307, when asked per request or by its node setting."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from confman.api import HttpServer, serve
from confman.node.config import from_mapping
from tests.api.fakes import FakeRuntime
from tests.api.harness import LiveNode, LoopThread, free_port, headers, single_node_config
from tests.api.spec import CheckedClient

ED = headers("editor")
NS = "fw"


class Follower:
    """A follower whose leader is ``leader_url``, serving the API."""

    def __init__(self, lt: LoopThread, tmp: Path, leader_url: str, **cfg: object) -> None:
        self.lt = lt
        config = replace(single_node_config(tmp / "cfg"), node_id="node9", **cfg)  # type: ignore[arg-type]
        self.rt: FakeRuntime = lt.call(lambda: FakeRuntime(config, tmp / "data"))
        self.rt.leader_id, self.rt.leader_url = "node1", leader_url
        self.server: HttpServer = lt.run(serve(self.rt, "127.0.0.1", 0))
        self.url = self.server.url
        self.client = CheckedClient(base_url=self.url, timeout=20)

    def close(self) -> None:
        self.client.close()
        self.lt.run(self.server.stop())
        self.lt.call(self.rt.close)


@pytest.fixture(scope="module")
def lt() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="module", autouse=True)
def namespace(api: CheckedClient) -> None:
    assert api.put(f"/api/v1/namespaces/{NS}", headers=headers("admin")).status_code in (200, 201)


@pytest.fixture
def follower(lt: LoopThread, node: LiveNode, tmp_path: Path) -> Iterator[Follower]:
    f = Follower(lt, tmp_path, node.url + "/")
    yield f
    f.close()


def entry(key: str) -> str:
    return f"/api/v1/namespaces/{NS}/config/{key}"


def test_forward_true_returns_the_leaders_answer(follower: Follower, api: CheckedClient) -> None:
    r = follower.client.put(
        entry("a") + "?forward=true",
        json={"value": "via follower"},
        headers={**ED, "X-Correlation-Id": "fw-1"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["value"] == "via follower" and r.json()["updatedBy"] == "editor key"
    assert r.headers["ETag"] == '"1"' and r.headers["Location"] == entry("a")
    assert int(r.headers["X-Confman-Index"]) > 0
    assert r.headers["X-Correlation-Id"] == "fw-1"
    assert follower.rt.proposals == []  # the follower proposed nothing itself
    assert api.get(entry("a"), headers=ED).json()["value"] == "via follower"


def test_leader_errors_are_relayed(follower: Follower) -> None:
    put = follower.client.put
    put(entry("c") + "?forward=1", json={"value": "1"}, headers=ED)
    r = put(entry("c") + "?forward=1", json={"value": "2"}, headers={**ED, "If-Match": '"7"'})
    assert r.status_code == 412 and r.headers["ETag"] == '"1"'
    missing = "/api/v1/namespaces/fw-none/config/k?forward=true"
    r = put(missing, json={"value": "x"}, headers={**ED, "X-Correlation-Id": "fw-2"})
    assert r.status_code == 404 and r.json()["traceId"] == "fw-2"


def test_idempotency_key_travels_with_the_forwarded_write(follower: Follower) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    path = entry("idem") + "?forward=true"
    first = follower.client.put(path, json={"value": "once"}, headers={**ED, **key})
    again = follower.client.put(path, json={"value": "once"}, headers={**ED, **key})
    assert first.status_code == again.status_code == 201
    assert again.headers["X-Confman-Replayed-From"] == first.headers["X-Confman-Index"]


def test_node_setting_forwards_every_write_and_forward_false_redirects(
    lt: LoopThread, node: LiveNode, tmp_path: Path
) -> None:
    f = Follower(lt, tmp_path, node.url + "/", forward_writes=True)
    try:
        r = f.client.put(entry("s"), json={"value": "1"}, headers=ED)
        assert r.status_code == 201
        r = f.client.delete(entry("s"), headers=ED)
        assert r.status_code == 204 and "X-Confman-Index" in r.headers
        r = f.client.put(entry("s") + "?forward=false", json={"value": "1"}, headers=ED)
        assert r.status_code == 307
    finally:
        f.close()


def test_no_forwarding_for_a_caller_the_follower_refuses(follower: Follower) -> None:
    r = follower.client.put(entry("x") + "?forward=true", json={"value": "1"})
    assert r.status_code == 401
    r = follower.client.put(
        entry("x") + "?forward=true", json={"value": "1"}, headers=headers("viewer")
    )
    assert r.status_code == 403


def test_bad_forward_parameter_is_400_on_any_node(follower: Follower, api: CheckedClient) -> None:
    for client in (follower.client, api):
        r = client.put(entry("x") + "?forward=maybe", json={"value": "1"}, headers=ED)
        assert r.status_code == 400 and r.json()["field"] == "forward"


def test_already_forwarded_requests_are_redirected_not_forwarded_again(
    follower: Follower,
) -> None:
    r = follower.client.put(
        entry("x") + "?forward=true",
        json={"value": "1"},
        headers={**ED, "X-Confman-Forwarded-By": "node7"},
    )
    assert r.status_code == 307


def test_forwarding_follows_a_leader_that_moved(
    lt: LoopThread, node: LiveNode, tmp_path: Path
) -> None:
    second = Follower(lt, tmp_path / "b", node.url + "/")  # redirects to the real leader
    first = Follower(lt, tmp_path / "a", second.url + "/")  # believes ``second`` leads
    try:
        r = first.client.put(entry("hop") + "?forward=true", json={"value": "1"}, headers=ED)
        assert r.status_code == 201 and r.json()["value"] == "1"
    finally:
        first.close()
        second.close()


def test_unreachable_leader_is_503_and_the_write_not_applied(
    lt: LoopThread, tmp_path: Path
) -> None:
    f = Follower(lt, tmp_path, f"http://127.0.0.1:{free_port()}/")
    try:
        r = f.client.put(entry("u") + "?forward=true", json={"value": "1"}, headers=ED)
        assert r.status_code == 503 and r.json()["title"] == "Leader unreachable"
        assert r.headers["Retry-After"] == "1"
    finally:
        f.close()


def test_config_settings_for_forwarding_and_history() -> None:
    base = {
        "node_id": "n1",
        "data_dir": "/tmp/x",
        "cluster_secret": "s" * 20,
        "members": [{"id": "n1", "raft": "127.0.0.1:1", "http": "http://127.0.0.1:2"}],
    }
    cfg = from_mapping(
        {**base, "http": {"forward_writes": True}, "history": {"retention_entries": 100}}
    )
    assert cfg.forward_writes and cfg.history_retention_entries == 100
    assert cfg.history_retention_s == 0 and cfg.history_compact_interval_ms == 5000
    for bad, field in [
        ({"http": {"forward_writes": "yes"}}, "http.forward_writes"),
        ({"history": {"retention_s": -1}}, "history.retention_s"),
        ({"history": {"compact_interval_ms": 0}}, "history.compact_interval_ms"),
        ({"history": {"keep": 1}}, "history.keep"),
    ]:
        with pytest.raises(ValueError, match=field):
            from_mapping({**base, **bad})
