"""The registry of deliberate node bugs, and how each is patched into the runtime.

Each bug replaces the one runtime method it lives in, in the process of a node started
with `NODE_COMMAND` (``python -m tests.faults.buggy_node``), which reads the names from
``CONFMAN_TEST_BUGS`` (comma-separated). An unknown name is an error.

- ``node:stale_linearizable``: linearizable reads skip the ReadIndex round and are served
  from whatever this node has applied (`confman.verify` must report them).
- ``node:ack_before_fsync``: the WAL is written without fsync before the node acknowledges
  its entries (only power loss, or a fault-injecting file layer, can catch it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from confman.node.runtime_common import set_result
from confman.node.runtime_ready import ReadyLoop
from confman.node.runtime_requests import Reads
from confman.raft.types import Entry, HardState

ENV = "CONFMAN_TEST_BUGS"
#: The argv prefix that starts a node with the bugs named in ``CONFMAN_TEST_BUGS``
#: (``ProcessCluster(node_command=...)``).
NODE_COMMAND = (sys.executable, "-m", "tests.faults.buggy_node")


def _stale_linearizable() -> None:
    def flush(self: Reads) -> None:
        for f in self.take_queued():  # no ReadIndex round at all: nothing to wait for
            set_result(f, 0)

    Reads.flush = flush  # type: ignore[method-assign]


def _ack_before_fsync() -> None:
    write_log = ReadyLoop.write_log

    async def unsynced(self: ReadyLoop, hs: HardState, entries: list[Entry], sync: bool) -> None:
        await write_log(self, hs, entries, False)

    ReadyLoop.write_log = unsynced  # type: ignore[method-assign]


BUGS: dict[str, Callable[[], None]] = {
    "node:stale_linearizable": _stale_linearizable,
    "node:ack_before_fsync": _ack_before_fsync,
}


def parse(spec: str | Iterable[str]) -> frozenset[str]:
    """The bug names in ``spec`` (comma-separated, or an iterable); ValueError for an
    unknown one."""
    items = spec.split(",") if isinstance(spec, str) else spec
    names = frozenset(b.strip() for b in items if b.strip())
    unknown = names - BUGS.keys()
    if unknown:
        raise ValueError(
            f"unknown deliberate bugs: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(BUGS))})"
        )
    return names


def install(names: Iterable[str]) -> None:
    """Patch the named bugs into this process's runtime (a node process only)."""
    for name in sorted(parse(names)):
        BUGS[name]()
