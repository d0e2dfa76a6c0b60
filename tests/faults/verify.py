"""``python -m tests.faults.verify --bugs node:stale_linearizable ...``: ``confman verify``
against a fresh cluster of deliberately broken nodes (`tests.faults.node_bugs`); the options
are those of ``confman verify``. The ``linearizable`` check must then fail."""

from __future__ import annotations

from confman.verify import command, run
from tests.faults.cluster import BuggyProcessCluster


def main() -> None:
    run.ProcessCluster = BuggyProcessCluster  # type: ignore[misc]
    command.verify()


if __name__ == "__main__":
    main()
