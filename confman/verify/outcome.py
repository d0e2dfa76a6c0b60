"""What a verify run is given and what it comes to: `RunConfig`, `Verdict`, `RunResult`.

Shared by the runner (``confman.verify.run``), the checks (``confman.verify.checks``) and the
report (``confman.verify.report``), so that none of them imports another for its types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confman.verify.history import History
from confman.verify.nemesis import Fault, FaultEvent, Timing
from confman.verify.workload import WorkloadStats

__all__ = ["RunConfig", "RunResult", "Verdict"]


@dataclass(slots=True)
class RunConfig:
    """Everything a run needs; `command.verify` fills it from the command line."""

    duration: float = 60.0
    nemesis: str = "kill,pause,partition"
    seed: int = 0
    nodes: int = 3
    clients: int = 10
    keys: int = 8
    targets: list[str] | None = None
    api_key: str = "confman_dev_abc123"
    """Only with ``targets``: a fresh cluster makes its own keys."""
    out: Path | None = None
    """Report directory (default ``verify-reports/<time>-seed<N>``)."""
    bugs: str = ""
    """``CONFMAN_TEST_BUGS`` for the nodes of a fresh cluster."""
    timeout: float = 2.0
    rate: float = 0.0
    settle_timeout: float = 40.0
    check_timeout: float = 120.0
    snapshot_interval: int = 2000
    timing: Timing = field(default_factory=Timing)
    workload: dict[str, Any] = field(default_factory=dict)
    """Extra `WorkloadConfig` fields (mix weights, ``rotate_after``, ...)."""
    log: Callable[[str], None] = print


@dataclass(slots=True)
class Verdict:
    """The outcome of one check: ``ok`` True (passed), False (violated), None (unknown)."""

    name: str
    ok: bool | None
    summary: str
    details: str = ""

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "UNKNOWN"}[self.ok]


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    history: History
    meta: dict[int, dict[str, Any]]
    stats: WorkloadStats
    faults: list[Fault]
    events: list[FaultEvent]
    verdicts: list[Verdict]
    states: dict[str, dict[str, Any]]
    started: float
    ended: float
    """Monotonic times of the workload's start and end (before the final heal)."""
    urls: list[str]
    bad_keys: list[Any] = field(default_factory=list)
    """Keys the linearizability checker found violated (for the timeline)."""
    report_dir: Path | None = None
    summary: str = ""

    @property
    def violations(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.ok is False]

    @property
    def valid(self) -> bool:
        return not self.violations and all(v.ok for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        if self.violations:
            return 1
        return 0 if self.valid else 2
