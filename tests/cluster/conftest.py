"""Cluster tests: real `confman serve` processes on loopback (select with ``-m cluster``).

Every test builds its clusters through the ``make_cluster`` fixture, which kills every
process and stops every proxy afterwards, pass or fail, and attaches the tail of each node's
log to a failing test's report.

With ``CONFMAN_TEST_API_TLS=1`` every cluster serves its API over HTTPS; ``SSL_CERT_FILE``
then names the test CA, so every httpx client of the tests (and ``confman.client``)
trusts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from confman.verify.cluster import ProcessCluster
from tests.cluster.util import trust_api_ca

HERE = Path(__file__).parent
_CLUSTERS = pytest.StashKey[list[ProcessCluster]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: real-process cluster tests (tests/cluster)")
    trust_api_ca()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(180))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.failed and rep.when in ("setup", "call"):
        for i, c in enumerate(item.stash.get(_CLUSTERS, [])):
            rep.sections.append((f"cluster {i} at failure", c.describe()))
            rep.sections.append((f"cluster {i} node logs", c.logs(80)))


@pytest.fixture
def make_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ProcessCluster]]:
    """``make_cluster(n=3, **ProcessCluster kwargs)``: a cluster closed after the test."""
    clusters: list[ProcessCluster] = []
    request.node.stash[_CLUSTERS] = clusters

    def make(n: int = 3, **kwargs: Any) -> ProcessCluster:
        c = ProcessCluster(n, tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(c)
        return c

    try:
        yield make
    finally:
        for c in clusters:
            c.close()
