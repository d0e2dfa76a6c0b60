"""ProcessCluster without a running cluster: configs, ports, crash detection, cleanup."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from confman.node.config import hash_key, load
from confman.verify.cluster import ClusterError, NodeCrashed, ProcessCluster, free_ports, to_toml


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(p < lo for p in ports)
    assert not set(ports) & set(free_ports(20))


def test_toml_writer_round_trips() -> None:
    doc = {
        "a": 'x"y\\z',
        "n": 3,
        "f": 0.5,
        "b": True,
        "l": [1, 2],
        "t": {"k": "v", "inner": {"deep": 1}},
        "arr": [{"id": "1"}, {"id": "2", "xs": ["p", "q"]}],
    }
    assert tomllib.loads(to_toml(doc)) == {**doc, "l": [1, 2]}


def test_configs_route_every_peer_link_through_its_own_proxy(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(
        5,
        election_timeout_ms=(300, 600),
        snapshot_interval=7,
        extra={"raft": {"replication_timeout_ms": 1234}},
        node_extra={"node2": {"log": {"level": "debug"}}},
    )
    assert len(c.links) == 20 and len({p.port for p in c.links.values()}) == 20
    for nid in c.ids:
        cfg = load(c.node(nid).config_path, env={})
        assert cfg.node_id == nid
        assert cfg.raft_listen == ("127.0.0.1", c.node(nid).raft_port)
        assert cfg.http_advertise == c.url(nid)
        assert cfg.election_timeout_ms == (300, 600)
        assert cfg.snapshot_interval == 7
        assert cfg.replication_timeout_ms == 1234
        assert cfg.log_level == ("debug" if nid == "node2" else "info")
        assert cfg.data_dir == c.node(nid).data_dir
        for m in cfg.members:
            if m.id == nid:
                assert m.raft == ("127.0.0.1", c.node(nid).raft_port)
            else:
                proxy = c.links[(nid, m.id)]
                assert m.raft == proxy.address
                assert proxy.target == ("127.0.0.1", c.node(m.id).raft_port)
            assert m.http == c.url(m.id)
        # Keys: hashes only in the file, plain keys in the object.
        text = c.node(nid).config_path.read_text()
        assert c.keys["admin"] not in text and c.keys["viewer"] not in text
        by_role = {k.roles: k.key_sha256 for k in cfg.api_keys}
        assert by_role[("admin",)] == hash_key(c.keys["admin"])
        assert by_role[("viewer",)] == hash_key(c.keys["viewer"])
    assert c.node_of_url(c.url("node3").rstrip("/")) == "node3"


def test_partition_helpers_set_the_right_links(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(5)

    def cut() -> set[tuple[str, str]]:
        return {k for k, p in c.links.items() if p.mode != "pass"}

    c.isolate("node2")
    assert cut() == {(a, b) for a, b in c.links if "node2" in (a, b)}
    c.heal()
    assert cut() == set()
    c.partition(["node1", "node2"], ["node4"])
    assert cut() == {("node1", "node4"), ("node4", "node1"), ("node2", "node4"), ("node4", "node2")}
    c.heal()
    c.cut("node1", "node3")
    assert cut() == {("node1", "node3")}
    c.bridge()  # node1,node2 | node3 | node4,node5
    left, right = ("node1", "node2"), ("node4", "node5")
    assert cut() == {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
    c.heal()
    c.latency(25, [("node1", "node2")])
    assert c.links[("node1", "node2")].latency_ms == 25 and cut() == set()


def test_a_node_that_dies_at_start_is_reported_with_its_log(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    path = c.node("node1").config_path
    path.write_text(path.read_text().replace('profile = "prod"', 'profile = "bogus"'))
    c.start("node1")
    with pytest.raises(NodeCrashed, match=r"(?s)node1 exited with code .*profile"):
        c.wait_up("node1", timeout=30)
    c.forget_exit("node1")
    with pytest.raises(ClusterError, match=r"timed out .* waiting for nothing"):
        c.wait_for(lambda: False, timeout=0.2, what="nothing")


def test_close_is_idempotent_and_refuses_new_starts(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    c.close()
    c.close()
    assert c._proxy_thread.loop.is_closed()
    with pytest.raises(ClusterError, match="closed"):
        c.start("node1")
