"""``python -m tests.faults.buggy_node serve --config ...``: ``confman`` with the deliberate
bugs named in ``CONFMAN_TEST_BUGS`` patched in (`tests.faults.node_bugs`). Test-only: the
shipped ``confman`` command knows nothing of them. An unknown name stops it with status 2."""

from __future__ import annotations

import os
import sys

from tests.faults import node_bugs


def main() -> None:
    try:
        names = node_bugs.parse(os.environ.get(node_bugs.ENV, ""))
    except ValueError as exc:
        print(f"buggy_node: {exc}", file=sys.stderr)
        sys.exit(2)
    node_bugs.install(names)
    if names:
        print(
            "TEST-ONLY DELIBERATE BUGS ENABLED: " + ",".join(sorted(names)) + " (not safe)",
            file=sys.stderr,
            flush=True,
        )
    from confman.cli import main as confman_main

    confman_main(prog_name="confman")


if __name__ == "__main__":
    main()
