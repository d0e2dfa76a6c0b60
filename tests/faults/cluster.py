"""`BuggyProcessCluster`: a `ProcessCluster` whose nodes start through
`tests.faults.buggy_node`, so ``env={"CONFMAN_TEST_BUGS": ...}`` takes effect (checked
here first: an unknown name fails before any node starts)."""

from __future__ import annotations

from typing import Any

from confman.verify.cluster import ProcessCluster
from tests.faults import node_bugs


class BuggyProcessCluster(ProcessCluster):
    #: `confman.verify.run` refuses ``--bugs`` with any other cluster class.
    runs_deliberate_bugs = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        node_bugs.parse((kw.get("env") or {}).get(node_bugs.ENV, ""))
        kw.setdefault("node_command", node_bugs.NODE_COMMAND)
        super().__init__(*args, **kw)
