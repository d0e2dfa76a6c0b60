"""The ``confman dev`` command group: run the local cluster, and control its nodes."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from confman.devcluster import DevError, Supervisor, control
from confman.devconfig import DEV_KEYS, write_configs


@click.group(invoke_without_command=True)
@click.option(
    "--dir",
    "root",
    default=".confman-dev",
    show_default=True,
    envvar="CONFMAN_DEV_DIR",
    type=click.Path(file_okay=False),
    help="Where the cluster keeps its data and control socket.",
)
@click.option("--fresh", is_flag=True, help="Delete the previous dev cluster's data first.")
@click.option(
    "--port-offset",
    default=0,
    show_default=True,
    type=click.IntRange(0, 50_000),
    help="Add this to every port (HTTP 6100/6200/6300, Raft 7100/7200/7300).",
)
@click.pass_context
def dev(ctx: click.Context, root: str, fresh: bool, port_offset: int) -> None:
    """Start a local 3-node cluster on ports 6100/6200/6300; Ctrl-C stops it.

    A node that dies is reported and the others keep running. From another terminal:
    `confman dev status`, `confman dev kill|stop|start|restart NODE`.
    """
    path = Path(root).resolve()
    ctx.obj = path
    if ctx.invoked_subcommand is not None:
        if fresh:
            raise click.UsageError("--fresh starts a cluster: use it without a subcommand")
        return
    if _running(path):
        raise click.ClickException(f"a dev cluster is already running in {path}")
    if fresh and path.exists():
        shutil.rmtree(path)
    nodes = write_configs(path, port_offset)
    names = ", ".join(f"{k} = {', '.join(roles)}" for k, _, roles in DEV_KEYS)
    click.secho(
        f"WARNING: development cluster with the well-known dev API keys ({names}). "
        "Never expose it.",
        fg="yellow",
        bold=True,
        err=True,
    )
    try:
        sys.exit(asyncio.run(Supervisor(nodes, path).run()))
    except DevError as exc:
        raise click.ClickException(str(exc)) from None


def _running(path: Path) -> bool:
    try:
        control(path, "status", timeout=2.0)
    except DevError:
        return False
    return True


def _call(root: Path, op: str, node: str | None = None) -> dict[str, Any]:
    try:
        return control(root, op, node)
    except DevError as exc:
        raise click.ClickException(str(exc)) from None


def _cluster_view(url: str) -> dict[str, Any]:
    """What the node at ``url`` says of itself in ``/health/ready`` (or why it did not)."""
    import httpx

    try:
        r = httpx.get(url + "health/ready", timeout=2.0)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"ready": "unreachable", "error": type(exc).__name__}
    return {"ready": body.get("status"), **body.get("cluster", {})}


@dev.command("status")
@click.option("--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def dev_status(root: Path, output: str) -> None:
    """Each node's process and what it says of the cluster."""
    import orjson

    rows = []
    for n in _call(root, "status")["nodes"]:
        view = _cluster_view(n["url"]) if n["state"] == "running" else {}
        rows.append({**n, **view})
    if output == "json":
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    cols = ("node", "state", "pid", "ready", "role", "term", "leader", "commitIndex",
            "appliedIndex", "lastExit")
    table = [cols] + [tuple("-" if r.get(c) is None else str(r[c]) for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _resolve(root: Path, node: str) -> str:
    """NODE as given, or the node that is now the ``leader`` / a ``follower``."""
    if node not in ("leader", "follower"):
        return node
    for row in _call(root, "status")["nodes"]:
        if row["state"] == "running" and _cluster_view(row["url"]).get("role") == node:
            return str(row["node"])
    raise click.ClickException(f"no running node is a {node} now (see `confman dev status`)")


def _echo(row: dict[str, Any]) -> None:
    state = f"pid {row['pid']}" if row["pid"] else row.get("lastExit") or "stopped"
    extra = "" if row.get("serving", True) else " (not answering /health yet)"
    click.echo(f"{row['node']}: {row['state']} ({state}){extra}")


def _node_command(op: str, doc: str) -> click.Command:
    @click.argument("node")
    @click.pass_obj
    def command(root: Path, node: str) -> None:
        _echo(_call(root, op, _resolve(root, node))["node"])

    command.__doc__ = doc
    return dev.command(op)(command)


_WHICH = " NODE is node1, node2, node3, or `leader` / `follower` for the node in that role now."
_node_command("kill", "Kill NODE with SIGKILL, as a crash would." + _WHICH)
_node_command("stop", "Stop NODE with SIGTERM (SIGKILL after 10 s)." + _WHICH)


@dev.command("start")
@click.argument("node", required=False)
@click.pass_obj
def dev_start(root: Path, node: str | None) -> None:
    """Start NODE again (without NODE: every stopped node) and wait until it answers."""
    if node is not None:
        names = [node]
    else:
        names = [r["node"] for r in _call(root, "status")["nodes"] if r["state"] == "stopped"]
        if not names:
            raise click.ClickException("every node is running")
    for name in names:
        _echo(_call(root, "start", name)["node"])


_node_command("restart", "Stop NODE (SIGTERM) and start it again." + _WHICH)
