"""The runtime protocol: what the HTTP layer needs of a node (``confman.node.runtime.Runtime``
in production, ``tests/api/fakes.FakeRuntime`` in the API tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from confman.node.config import Member, NodeConfig
from confman.node.state.commands import Request
from confman.node.state.machine import ApplyResult
from confman.node.state.queries import Reader


class NodeRuntime(Protocol):
    """The part of ``confman.node.runtime.Runtime`` the HTTP layer uses."""

    cfg: NodeConfig
    id: str
    members: Mapping[str, Member]
    applied_index: int
    reader: Reader | None
    on_applied: list[Callable[[list[Any], list[ApplyResult]], None]]

    @property
    def role(self) -> str: ...
    @property
    def term(self) -> int: ...
    @property
    def leader_id(self) -> str | None: ...
    @property
    def leader_url(self) -> str | None: ...
    @property
    def commit_index(self) -> int: ...
    @property
    def metrics(self) -> Any: ...

    def last_contact_ms(self) -> int: ...
    def is_ready(self) -> bool: ...
    async def propose(self, request: Request, timeout: float | None = None) -> ApplyResult: ...
    async def read_index(self, timeout: float = 5.0) -> int: ...
    def lease_read_index(self) -> int | None: ...
    async def wait_applied(self, index: int, timeout: float) -> None: ...
