"""The ``confman`` client commands against a live 3-node cluster: tables, JSON, the API key
from ``$CONFMAN_API_KEY``, and errors a person can act on."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner, Result

from confman.cli import main
from confman.verify.cluster import ProcessCluster, free_ports
from tests.client.conftest import endpoints

pytestmark = pytest.mark.timeout(180)


def run(c: ProcessCluster, *args: str, key: str = "admin", stdin: str | None = None) -> Result:
    env = {"CONFMAN_API_KEY": c.keys.get(key, key)}
    runner = CliRunner()
    return runner.invoke(main, [*args, "--endpoints", endpoints(c)], env=env, input=stdin)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_namespace_and_entry_commands(healthy: ProcessCluster) -> None:
    c = healthy
    assert "namespace cli-a saved" in ok(run(c, "ns", "create", "cli-a", "-d", "from the CLI"))
    listing = ok(run(c, "ns", "list"))
    assert listing.splitlines()[0].split() == ["NAMESPACE", "DESCRIPTION", "OWNER", "CREATED"]
    assert any(
        line.startswith("cli-a ") and "from the CLI" in line for line in listing.splitlines()
    )
    assert ok(run(c, "put", "cli-a", "db.url", "postgres://x")).startswith(
        "created cli-a/db.url version 1"
    )
    assert "updated cli-a/db.url version 2" in ok(
        run(c, "put", "cli-a", "db.url", "-", "--if-match", "1", stdin="postgres://y")
    )
    assert ok(run(c, "get", "cli-a", "db.url", "--raw")) == "postgres://y\n"
    shown = ok(run(c, "get", "cli-a", "db.url", "--consistency", "linearizable"))
    assert "value      postgres://y" in shown and "version    2" in shown
    doc = json.loads(ok(run(c, "get", "cli-a", "db.url", "-o", "json")))
    assert doc["value"] == "postgres://y" and doc["updatedBy"] == "Cluster Admin"
    ls = ok(run(c, "ls", "cli-a")).splitlines()
    assert ls[0].split() == ["KEY", "VALUE", "TYPE", "VERSION", "UPDATED"]
    assert ls[1].split()[:4] == ["db.url", "postgres://y", "string", "2"]
    assert "NAMESPACE" in ok(run(c, "ls")).splitlines()[0]
    audit = ok(run(c, "audit", "cli-a")).splitlines()
    assert [line.split()[1] for line in audit[1:]] == [
        "config.updated",
        "config.created",
        "namespace.created",
    ]
    watched = ok(run(c, "watch", "cli-a", "--since", "0", "--count", "3", "-o", "json"))
    assert [json.loads(line)["type"] for line in watched.splitlines()] == [
        "namespace.created",
        "config.created",
        "config.updated",
    ]
    assert "deleted cli-a/db.url" in ok(run(c, "delete", "cli-a", "db.url", "--if-match", "2"))
    assert "namespace cli-a deleted" in ok(run(c, "ns", "delete", "cli-a", "--yes"))


def test_errors_are_one_line_explanations(healthy: ProcessCluster) -> None:
    c = healthy
    ok(run(c, "ns", "create", "cli-e"))
    missing = run(c, "get", "cli-e", "nope")
    assert missing.exit_code == 1
    assert "Error: Configuration not found: No key 'nope' in namespace 'cli-e'" in missing.output
    ok(run(c, "put", "cli-e", "k", "v"))
    lost = run(c, "put", "cli-e", "k", "w", "--if-match", "7")
    assert lost.exit_code == 1 and "expected 7, current 1" in lost.output
    stranger = run(c, "ns", "list", key="not-a-key")
    assert stranger.exit_code == 1 and "set CONFMAN_API_KEY or pass --api-key" in stranger.output
    viewer = run(c, "put", "cli-e", "k", "x", key="viewer")
    assert viewer.exit_code == 1 and "Forbidden" in viewer.output
    bad = run(c, "put", "cli-e", "k", "x", "--if-match", "seven")
    assert bad.exit_code == 2 and "--if-match" in bad.output
    declined = run(c, "ns", "delete", "cli-e", stdin="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    down = CliRunner().invoke(
        main,
        ["ns", "list", "--endpoints", dead, "--retry-timeout", "0.5"],
        env={"CONFMAN_API_KEY": "k"},
    )
    assert down.exit_code == 1 and "Cannot reach the cluster" in down.output


def test_cluster_status(healthy: ProcessCluster) -> None:
    c = healthy
    c.wait_ready()  # a loaded machine may have had an election since the fixture checked
    deadline = time.monotonic() + 15
    while True:
        lines = ok(run(c, "cluster", "status")).splitlines()
        if all(line.split()[2] == "ready" for line in lines[1:]) or time.monotonic() > deadline:
            break
    assert lines[0].split()[:4] == ["ENDPOINT", "NODE", "STATUS", "ROLE"]
    assert sorted(line.split()[3] for line in lines[1:]) == ["follower", "follower", "leader"]
    nodes = json.loads(ok(run(c, "cluster", "status", "-o", "json")))
    assert {n["nodeId"] for n in nodes} == set(c.ids) and all(n["ready"] for n in nodes)
