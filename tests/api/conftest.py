"""Fixtures: one live single-node cluster for the session, a spec-checking client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.harness import LiveNode
from tests.api.spec import CheckedClient


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    live = LiveNode(tmp_path_factory.mktemp("api-node"))
    try:
        yield live
    finally:
        live.close()


@pytest.fixture(scope="session")
def api(node: LiveNode) -> Iterator[CheckedClient]:
    """A client of the live node that checks every response against the OpenAPI document."""
    with CheckedClient(base_url=node.url, timeout=20) as client:
        yield client
