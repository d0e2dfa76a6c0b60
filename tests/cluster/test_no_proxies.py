"""ProcessCluster(proxies=False): members talk to each other directly (benchmark set-up)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from confman.node.config import load
from confman.verify.cluster import ClusterError, ProcessCluster


def test_a_cluster_without_proxies_elects_a_leader_and_accepts_a_write(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3, proxies=False)
    assert c.links == {}
    for nid in c.ids:
        for m in load(c.node(nid).config_path, env={}).members:
            assert m.raft == ("127.0.0.1", c.node(m.id).raft_port)
    with pytest.raises(ClusterError, match="proxies=False"):
        c.isolate("node1")
    with pytest.raises(ClusterError, match="proxies=False"):
        c.latency(10)
    c.start_all()
    leader = c.wait_leader(timeout=30)
    assert c.request(leader, "PUT", "api/v1/namespaces/b", json={}).status_code == 201
    r = c.request(leader, "PUT", "api/v1/namespaces/b/config/k", json={"value": "v"})
    assert r.status_code == 201, r.text
    other = next(n for n in c.ids if n != leader)
    got = c.request(other, "GET", "api/v1/namespaces/b/config/k?consistency=linearizable")
    assert got.status_code == 200 and got.json()["value"] == "v"
