"""A stand-in for ``Runtime`` in the states a single live node cannot be put in on demand:
a follower, no leader, a replication timeout, a failing node. Reads come from a real state
machine database; proposals never succeed (they raise what the test asks for)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confman.api.node_runtime import NodeRuntime
from confman.node.config import NodeConfig
from confman.node.errors import NoLeader, NotLeader, ReadTimeout
from confman.node.metrics import NodeMetrics
from confman.node.state.commands import (
    Command,
    PutConfig,
    PutNamespace,
    Request,
    encode_request,
    format_timestamp,
)
from confman.node.state.machine import ApplyResult, StateMachine
from confman.node.state.queries import Reader
from confman.raft.types import Entry

LEADER_URL = "http://127.0.0.1:6200/"


class FakeRuntime:
    """Runtime's observable attributes, settable; ``error`` is what ``propose`` raises on a
    node that believes itself leader (and what ``read_index`` raises when set)."""

    def __init__(self, cfg: NodeConfig, data_dir: Path) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.members = {m.id: m for m in cfg.members}
        self.metrics = NodeMetrics(cfg.node_id)
        self.role = "follower"
        self.term = 7
        self.leader_id: str | None = "node2"
        self.leader_url: str | None = LEADER_URL
        self.ready = True
        self.contact_ms = 40
        self.error: BaseException | None = None
        self.proposals: list[Request] = []
        self.on_applied: list[Any] = []
        data_dir.mkdir(parents=True, exist_ok=True)
        self.sm = StateMachine(data_dir / "state.db")
        self.reader: Reader | None = Reader(data_dir / "state.db")

    # state the fake serves reads from: applied through the real state machine
    def apply(self, *commands: Command) -> list[ApplyResult]:
        first = self.sm.applied_index + 1
        stamp = format_timestamp(datetime.now(UTC))
        entries = [
            Entry(self.term, first + i, data=encode_request(Request(c, "seed", stamp)))
            for i, c in enumerate(commands)
        ]
        return self.sm.apply(entries)

    def seed(self) -> None:
        self.apply(PutNamespace("app", "seeded", None), PutConfig("app", "k", "v"))

    @property
    def applied_index(self) -> int:
        return self.sm.applied_index

    @property
    def commit_index(self) -> int:
        return self.sm.applied_index

    def last_contact_ms(self) -> int:
        return self.contact_ms

    def is_ready(self) -> bool:
        return self.ready

    def _not_leader(self) -> Exception:
        if self.leader_id is None:
            return NoLeader("no leader is known")
        return NotLeader(self.leader_id, self.leader_url)

    async def propose(self, request: Request, timeout: float | None = None) -> ApplyResult:
        self.proposals.append(request)
        if self.role != "leader":
            raise self._not_leader()
        assert self.error is not None, "the fake cannot commit anything"
        raise self.error

    async def read_index(self, timeout: float = 5.0) -> int:
        if self.error is not None:
            raise self.error
        if self.leader_id is None:
            raise NoLeader("no leader is known")
        return self.applied_index

    def lease_read_index(self) -> int | None:
        return None

    async def wait_applied(self, index: int, timeout: float) -> None:
        if index > self.applied_index:
            raise ReadTimeout(f"index {index} not applied within {timeout:g}s")

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.sm.close()

    if not TYPE_CHECKING:  # hidden from mypy, which would take it to provide every member

        def __getattr__(self, name: str) -> Any:  # pragma: no cover - fail loudly on new needs
            raise AttributeError(f"FakeRuntime has no {name!r}: the API uses more than it fakes")


if TYPE_CHECKING:

    def _conforms(cfg: NodeConfig, data_dir: Path) -> NodeRuntime:
        """mypy checks here that the fake is a ``NodeRuntime`` (tests/api/fakes.py is in its
        files): a member the protocol gains or changes must be faked too."""
        return FakeRuntime(cfg, data_dir)
