"""Bug hunting with the simulator: ``python -m confman.sim`` plus ``--bug NAME`` (test-only).

    python -m tests.raft.hunt --bug commit_old_terms --profile bug_figure8 --runs 50
    python -m tests.raft.hunt --seed 7 --profile bug_reorder --bug truncate_on_append --trace

The broken variants are defined in ``tests/raft/broken.py``; the shipped simulator and core
know nothing of them.
"""

from __future__ import annotations

import sys

from confman.sim.__main__ import main
from tests.raft.broken import KNOWN_BUGS, variant

if __name__ == "__main__":
    sys.exit(main(prog="python -m tests.raft.hunt", bugs=KNOWN_BUGS, variant_for=variant))
