"""Peer links over mutual TLS: certificates from a throwaway CA made by ``trustme``."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme

from confman.node.config import ConfigError, Member, NodeConfig, from_mapping
from confman.node.peer_tls import PeerTLS, PeerTLSContexts, load_contexts
from confman.node.runtime import Runtime
from confman.node.state.commands import PutConfig, PutNamespace, Request, format_timestamp

from .helpers import (
    HOST,
    LOOPS,
    SECRET,
    Node,
    RawPeer,
    eventually,
    heartbeat,
    run,
    snapshot_msg,
    stop_nodes,
)

pytestmark = pytest.mark.timeout(60)


class Pki:
    """A CA and the files of the certificates it issued, under ``dir``."""

    def __init__(self, dir: Path, ca: trustme.CA | None = None) -> None:
        self.dir = dir
        self.ca = ca or trustme.CA()
        dir.mkdir(parents=True, exist_ok=True)
        self.ca_file = dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, name: str, *hosts: str, check_hostname: bool = True) -> PeerTLS:
        cert = self.ca.issue_cert(*(hosts or (HOST, "localhost")), name)
        cert_file, key_file = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        for i, pem in enumerate(cert.cert_chain_pems):
            pem.write_to_path(str(cert_file), append=i > 0)
        cert.private_key_pem.write_to_path(str(key_file))
        return PeerTLS(cert_file, key_file, self.ca_file, check_hostname)

    def contexts(self, name: str, *hosts: str, **kw: Any) -> PeerTLSContexts:
        return load_contexts(self.issue(name, *hosts, **kw))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def tls_nodes(pki: Pki, ids: tuple[str, ...], **kw: Any) -> dict[str, Node]:
    nodes = {i: Node(i, tls=pki.contexts(i), **kw) for i in ids}
    for n in nodes.values():
        await n.t.start()
    addrs = {i: n.addr for i, n in nodes.items()}
    for n in nodes.values():
        n.t.update_peers(addrs)
    return nodes


def test_messages_flow_over_mutual_tls(pki: Pki, loop_kind: str) -> None:
    async def main() -> None:
        nodes = await tls_nodes(pki, ("a", "b", "c"))
        try:
            for frm in nodes.values():
                frm.t.send(
                    [heartbeat(frm.id, to, n) for to in nodes if to != frm.id for n in range(50)]
                )
            await eventually(lambda: all(len(n.inbox) == 100 for n in nodes.values()), "traffic")
            for n in nodes.values():
                for frm in nodes:
                    if frm != n.id:
                        assert [m.commit for m in n.from_(frm)] == list(range(50))
                assert sum(n.t.refused.values()) == 0
                conn = n.t._peers[next(p for p in nodes if p != n.id)].conn
                assert conn is not None and conn.transport is not None
                tls = conn.transport.get_extra_info("ssl_object")
                assert tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
            inbound = next(iter(nodes["a"].t._inbound_raft.values()))
            assert inbound.transport is not None
            assert inbound.transport.get_extra_info("peercert") is not None  # mutual
        finally:
            await stop_nodes(nodes.values())

    run(loop_kind, main)


def test_snapshot_streams_over_tls(pki: Pki, tmp_path: Path) -> None:
    src = tmp_path / "snapshot.bin"
    src.write_bytes(os.urandom(5 << 20))

    async def main() -> None:
        nodes = await tls_nodes(pki, ("a", "b"))
        a, b = nodes["a"], nodes["b"]
        a.snapshot_path, b.sink_dir = str(src), tmp_path
        try:
            a.t.send([snapshot_msg("a", "b")])
            await eventually(lambda: bool(a.snap_status), "snapshot status", 15)
            assert a.snap_status == [("b", True)]
            assert b.sinks[0].path.read_bytes() == src.read_bytes()
        finally:
            await stop_nodes(nodes.values())

    run("uvloop", main)


@pytest.mark.parametrize("who", ["other-ca", "no-cert", "plain-tcp"])
def test_peer_without_a_ca_signed_certificate_is_refused(
    pki: Pki, tmp_path: Path, who: str, loop_kind: str
) -> None:
    async def main() -> None:
        nodes = await tls_nodes(pki, ("a",))
        a = nodes["a"]
        a.t.update_peers({"m": (HOST, 1)})  # a member by id: only the certificate is wrong
        rogue: Node | None = None
        try:
            if who == "plain-tcp":
                raw = await RawPeer.connect(a.t.port)
                await raw.send_raw(b"\x00\x00\x00\x10" + os.urandom(16))
                assert await raw.closed_by_peer() == b""
                await raw.close()
            else:
                if who == "other-ca":  # trusts the cluster CA, but its cert is from another
                    tls = Pki(tmp_path / "other").issue("m")
                    ctx = load_contexts(replace(tls, ca_file=pki.ca_file))
                else:  # a client context with no certificate at all
                    ctx = pki.contexts("m")
                    bare = ssl.create_default_context(cafile=str(pki.ca_file))
                    ctx = PeerTLSContexts(ctx.server, bare)
                rogue = Node("m", tls=ctx)
                await rogue.t.start()
                rogue.t.update_peers({"a": a.addr})
                rogue.t.send([heartbeat("m", "a", 1)])
                await eventually(lambda: "a" in rogue.unreachable, "rogue refused")  # type: ignore[union-attr]
            await eventually(lambda: a.t.refused["tls"] == 1, "refusal counted")
            assert a.inbox == []
        finally:
            await stop_nodes([a] + ([rogue] if rogue else []))

    run(loop_kind, main)


def test_dialler_refuses_a_server_with_a_foreign_or_misnamed_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    async def main() -> None:
        a = Node("a", tls=pki.contexts("a"))
        foreign = Pki(tmp_path / "other").issue("f")
        servers = {
            "f": Node("f", tls=load_contexts(replace(foreign, ca_file=pki.ca_file))),
            "n": Node("n", tls=pki.contexts("n", "elsewhere.example")),  # names another host
        }
        for n in (a, *servers.values()):
            await n.t.start()
        for n in servers.values():
            n.t.update_peers({"a": a.addr})
        a.t.update_peers({i: n.addr for i, n in servers.items()})
        try:
            a.t.send([heartbeat("a", i, 1) for i in servers])
            await eventually(lambda: sorted(a.unreachable) == ["f", "n"], "both refused")
            assert a.t.refused["tls"] == 2
            assert all(n.inbox == [] for n in servers.values())
        finally:
            await stop_nodes([a, *servers.values()])

    run("asyncio", main)


def test_check_hostname_off_accepts_any_ca_signed_name(pki: Pki) -> None:
    async def main() -> None:
        a = Node("a", tls=pki.contexts("a", check_hostname=False))
        b = Node("b", tls=pki.contexts("b", "elsewhere.example"))
        for n in (a, b):
            await n.t.start()
        a.t.update_peers({"b": b.addr})
        b.t.update_peers({"a": a.addr})
        try:
            a.t.send([heartbeat("a", "b", 1)])
            await eventually(lambda: len(b.inbox) == 1, "delivered")
        finally:
            await stop_nodes([a, b])

    run("asyncio", main)


# -- configuration ---------------------------------------------------------------------------
def _raw(tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "node_id": "n1",
        "data_dir": "data",
        "cluster_secret": "s" * 32,
        "raft": {"tls": tls},
        "members": [{"id": "n1", "raft": "127.0.0.1:7100", "http": "http://127.0.0.1:6100/"}],
    }


def test_config_reads_raft_tls(pki: Pki) -> None:
    tls = pki.issue("n1")
    cfg = from_mapping(
        _raw({"cert_file": "n1.pem", "key_file": "n1.key", "ca_file": str(tls.ca_file)}),
        pki.dir,
    )
    assert cfg.raft_tls == tls
    off = from_mapping(
        _raw(
            {
                **{k: str(getattr(tls, k)) for k in ("cert_file", "key_file", "ca_file")},
                "check_hostname": False,
            }
        ),
        pki.dir,
    )
    assert off.raft_tls is not None and off.raft_tls.check_hostname is False
    raw = _raw({})
    del raw["raft"]
    assert from_mapping(raw, pki.dir).raft_tls is None


@pytest.fixture
def files(pki: Pki) -> Iterator[dict[str, str]]:
    tls = pki.issue("n1")
    yield {
        "cert_file": str(tls.cert_file),
        "key_file": str(tls.key_file),
        "ca_file": str(tls.ca_file),
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cert_file": None}, "raft.tls.cert_file: required"),
        ({"ca_file": "missing.pem"}, "raft.tls.ca_file: no such file"),
        ({"key_file": "missing.key"}, "raft.tls.key_file: no such file"),
        ({"cert_file": "garbage"}, "raft.tls.cert_file/key_file: cannot load"),
        ({"key_file": "other-key"}, "raft.tls.cert_file/key_file: cannot load"),
        ({"ca_file": "garbage"}, "raft.tls.ca_file: cannot load"),
        ({"check_hostname": "yes"}, "raft.tls.check_hostname: expected true or false"),
        ({"verify": False}, "raft.tls.verify: unknown setting"),
    ],
)
def test_config_rejects_bad_raft_tls(
    pki: Pki, files: dict[str, str], change: dict[str, Any], message: str
) -> None:
    (pki.dir / "garbage").write_text("not a certificate\n")
    pki.issue("other")
    table: dict[str, Any] = dict(files)
    for k, v in change.items():
        if v is None:
            del table[k]
        else:
            table[k] = {"garbage": "garbage", "other-key": "other.key"}.get(v, v)
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_mapping(_raw(table), pki.dir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_config_rejects_an_unreadable_key(pki: Pki, files: dict[str, str]) -> None:
    os.chmod(files["key_file"], 0)
    with pytest.raises(ConfigError, match=re.escape("raft.tls.key_file: cannot read")):
        from_mapping(_raw(files), pki.dir)


# -- a runtime cluster -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _req(cmd: Any, n: int) -> Request:
    return Request(
        cmd, "tester", format_timestamp(datetime(2026, 1, 1, n // 60, n % 60, tzinfo=UTC))
    )


def test_three_node_runtime_cluster_over_tls(pki: Pki, tmp_path: Path) -> None:
    ids = ("n1", "n2", "n3")
    ports = {i: _free_port() for i in ids}
    members = tuple(Member(i, (HOST, ports[i]), f"http://{HOST}:1/") for i in ids)

    def config(i: str) -> NodeConfig:
        return NodeConfig(
            node_id=i,
            data_dir=tmp_path / i,
            members=members,
            cluster_secret=SECRET,
            http_listen=(HOST, 0),
            http_advertise=f"http://{HOST}:1/",
            raft_listen=(HOST, ports[i]),
            election_timeout_ms=(150, 300),
            raft_tls=pki.issue(i),
        )

    async def main() -> None:
        nodes = [Runtime(config(i)) for i in ids]
        for rt in nodes:
            rt.fatal = lambda code: pytest.fail(f"runtime exit {code}")
            await rt.start()
        try:
            await eventually(lambda: any(rt.role == "leader" for rt in nodes), "a leader", 10)
            leader = next(rt for rt in nodes if rt.role == "leader")
            await leader.propose(_req(PutNamespace("app", "the app", "ops"), 0))
            for n in range(1, 21):
                await leader.propose(_req(PutConfig("app", f"k{n}", f"v{n}"), n))
            target = leader.applied_index
            await eventually(lambda: all(rt.applied_index >= target for rt in nodes), "applied", 10)
            for rt in nodes:
                assert sum(rt.transport.refused.values()) == 0
                conn = next(p.conn for p in rt.transport._peers.values() if p.conn is not None)
                assert conn.transport is not None
                assert conn.transport.get_extra_info("ssl_object") is not None
                metric = rt.metrics.registry.get_sample_value(
                    "confman_peer_refused_total", {"reason": "mac"}
                )
                assert metric in (None, 0.0)
        finally:
            for rt in nodes:
                await rt.stop()

    asyncio.run(main())


def test_process_cluster_writes_peer_tls_configs(tmp_path: Path, monkeypatch: Any) -> None:
    from confman.node.config import load
    from confman.verify.cluster import PEER_TLS_ENV, ProcessCluster

    monkeypatch.setenv(PEER_TLS_ENV, "1")
    with ProcessCluster(3, tmp_path / "c") as c:  # nothing started: configs only
        assert c.peer_tls
        for node in c.nodes.values():
            cfg = load(node.config_path, env={})
            assert cfg.raft_tls is not None and cfg.raft_tls.check_hostname
            assert cfg.raft_tls.cert_file.name == f"{node.id}.pem"
            assert cfg.raft_tls.key_file.stat().st_mode & 0o077 == 0
            load_contexts(cfg.raft_tls)
    with ProcessCluster(1, tmp_path / "d", peer_tls=False) as c:
        assert load(c.nodes["node1"].config_path, env={}).raft_tls is None
