"""``confman verify``: a Jepsen-style run against a fresh local cluster (or an existing one).

Register with ``main.add_command(verify)`` in `confman.cli`; until then run it as
``python -m confman.verify.command --duration 60 --nemesis kill,pause,partition --seed 1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from confman.verify.nemesis import parse_kinds
from confman.verify.run import RunConfig, TestOnlyBugs, run_verify


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.command("verify")
@click.option("--duration", default=60.0, show_default=True, help="Seconds of workload.")
@click.option(
    "--nemesis",
    default="kill,pause,partition",
    show_default=True,
    help="Faults: kill, pause, partition[:isolate-leader+isolate+split+bridge+cut], all, none.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the workload and nemesis.")
@click.option("--nodes", default=3, show_default=True, help="Nodes of the fresh cluster.")
@click.option("--clients", default=10, show_default=True, help="Concurrent clients.")
@click.option("--keys", default=8, show_default=True, help="Keys (each in its own namespace).")
@click.option(
    "--target",
    default=None,
    help="Comma-separated node URLs of an existing cluster (no nemesis, nothing destructive).",
)
@click.option(
    "--api-key",
    envvar="CONFMAN_API_KEY",
    default="confman_dev_abc123",
    show_default=True,
    help="Editor/admin key for --target (env CONFMAN_API_KEY).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report directory [default: verify-reports/<time>-seed<N>].",
)
@click.option("--timeout", default=2.0, show_default=True, help="Seconds per request.")
@click.option("--rate", default=0.0, show_default=True, help="Ops/s over all clients (0: max).")
@click.option(
    "--bugs",
    default=None,
    help="Deliberate node bugs: only through `python -m tests.faults.verify` (test-only) "
    "[default: env CONFMAN_TEST_BUGS].",
)
@click.option(
    "--check-timeout",
    default=120.0,
    show_default=True,
    help="Seconds the linearizability checker may search.",
)
def verify(
    duration: float,
    nemesis: str,
    seed: int,
    nodes: int,
    clients: int,
    keys: int,
    target: str | None,
    api_key: str,
    out: Path | None,
    timeout: float,
    rate: float,
    bugs: str | None,
    check_timeout: float,
) -> None:
    """Run a workload under faults, check linearizability and convergence, write a report.

    Exit status: 0 valid, 1 a violation was found, 2 inconclusive.
    """
    try:
        parse_kinds(nemesis)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nemesis") from None
    if duration <= 0 or clients < 1 or keys < 1 or nodes < 1:
        raise click.BadParameter("duration, clients, keys and nodes must be positive")
    targets = [u.strip() for u in target.split(",") if u.strip()] if target else None
    cfg = RunConfig(
        duration=duration,
        nemesis=nemesis,
        seed=seed,
        nodes=nodes,
        clients=clients,
        keys=keys,
        targets=targets,
        api_key=api_key,
        out=out,
        bugs=os.environ.get("CONFMAN_TEST_BUGS", "") if bugs is None else bugs,
        timeout=timeout,
        rate=rate,
        check_timeout=check_timeout,
        log=_log,
    )
    try:
        result = run_verify(cfg)
    except TestOnlyBugs as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(result.summary)
    sys.exit(result.exit_code)


if __name__ == "__main__":  # pragma: no cover
    verify()
