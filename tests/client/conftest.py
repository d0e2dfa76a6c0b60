"""A live 3-node cluster (real ``confman serve`` processes) shared by the client and CLI
tests of one session; closed, every process killed, at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import trust_api_ca

trust_api_ca()  # $CONFMAN_TEST_API_TLS=1: the shared cluster serves HTTPS


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    c = ProcessCluster(3, tmp_path_factory.mktemp("client-cluster"))
    try:
        c.start_all()
        c.wait_leader(timeout=30)
        c.wait_ready(timeout=30)
        yield c
    finally:
        c.close()


@pytest.fixture
def healthy(cluster: ProcessCluster) -> Iterator[ProcessCluster]:
    """The shared cluster with every node running and one leader, before and after a test."""
    cluster.heal()
    for nid in cluster.ids:
        cluster.start(nid)
    cluster.wait_ready(timeout=30)
    yield cluster
    cluster.heal()
    for nid in cluster.ids:
        cluster.start(nid)


def endpoints(c: ProcessCluster) -> str:
    return ",".join(c.url(n).rstrip("/") for n in c.ids)
