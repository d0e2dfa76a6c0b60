"""The deliberate-bug registry: names are checked, the patches land on the runtime methods
they name, and only in a node process started through the test entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import node_bugs
from tests.faults.cluster import BuggyProcessCluster

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=ROOT
    )


def test_names_are_parsed_and_unknown_ones_are_errors() -> None:
    assert node_bugs.parse("") == frozenset()
    assert node_bugs.parse(" node:stale_linearizable, ") == {"node:stale_linearizable"}
    with pytest.raises(ValueError, match="unknown deliberate bugs: node:nope"):
        node_bugs.parse("node:stale_linearizable,node:nope")
    with pytest.raises(ValueError, match="node:nope"):
        node_bugs.install(["node:nope"])


def test_an_unknown_name_fails_before_any_node_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="node:typo"):
        BuggyProcessCluster(1, tmp_path, env={node_bugs.ENV: "node:typo"})


def test_the_entry_point_refuses_an_unknown_name() -> None:
    code = "from tests.faults.buggy_node import main; main()"
    res = _python(code, CONFMAN_TEST_BUGS="node:typo")
    assert res.returncode == 2
    assert "unknown deliberate bugs: node:typo" in res.stderr


def test_each_bug_replaces_the_runtime_method_it_lives_in() -> None:
    code = """
from confman.node.runtime_ready import ReadyLoop
from confman.node.runtime_requests import Reads
before = (Reads.flush, ReadyLoop.write_log)
from tests.faults import node_bugs
node_bugs.install(node_bugs.BUGS)
assert Reads.flush is not before[0] and ReadyLoop.write_log is not before[1]
print("patched")
"""
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "patched"


def test_the_shipped_node_has_no_bug_switch() -> None:
    """The production command line reads no bug switch; the runtime has no bug branches."""
    cli = (ROOT / "confman" / "cli.py").read_text()
    assert node_bugs.ENV not in cli
    for path in (ROOT / "confman" / "node").glob("runtime*.py"):
        text = path.read_text()
        assert not re.search(r"\bbugs\b", text) and node_bugs.ENV not in text, path


def test_the_shipped_verify_command_refuses_deliberate_bugs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from confman.verify.command import verify

    res = CliRunner().invoke(
        verify, ["--duration", "1", "--bugs", "node:stale_linearizable", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "test-only" in res.output
    assert not any(tmp_path.iterdir()), "nothing ran"
