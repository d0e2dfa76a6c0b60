"""The ``confman`` command: run a node, run a local dev cluster, and the client commands
(``ns``, ``get``, ``put``, ``delete``, ``ls``, ``watch``, ``audit``, ``cluster status``, also
reachable as ``status``; see ``confman.client.commands``)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from typing import TYPE_CHECKING

import click

from confman import __version__
from confman.devcommands import dev
from confman.devconfig import DEV_KEYS
from confman.node.config import ConfigError, NodeConfig, hash_key, load

if TYPE_CHECKING:
    from confman.api.tls import ServerTls


@click.group()
@click.version_option(__version__, prog_name="confman")
def main() -> None:
    """Confman: a strongly consistent configuration service."""


# ---------------------------------------------------------------------------------- serve
@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The node's TOML configuration file.",
)
@click.option("--node-id", default=None, help="Override node_id.")
@click.option("--data-dir", default=None, help="Override data_dir.")
def serve(config_path: str, node_id: str | None, data_dir: str | None) -> None:
    """Run one Confman node until SIGTERM or Ctrl-C (SIGHUP reloads the HTTPS certificate)."""
    from confman.api.tls import ServerTls

    os.umask(0o077)  # the data directory, WAL, state and snapshots are the node's alone
    try:
        cfg = load(config_path, overrides={"node_id": node_id, "data_dir": data_dir})
        tls = ServerTls(cfg.http_tls) if cfg.http_tls is not None else None
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    from confman.api import configure_logging

    configure_logging(cfg.log_level, cfg.log_format)
    if cfg.profile == "dev" and any(
        hash_key(k) in {a.key_sha256 for a in cfg.api_keys} for k, _, _ in DEV_KEYS
    ):
        logging.getLogger("confman").warning(
            "DEVELOPMENT KEYS ARE ENABLED (confman_dev_*): never use this profile in production"
        )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        asyncio.run(_serve(cfg, tls))
    else:
        uvloop.run(_serve(cfg, tls))


async def _serve(cfg: NodeConfig, tls: ServerTls | None = None) -> None:
    from confman.api.app import serve as serve_http
    from confman.node.loop_watch import freeze_startup_heap
    from confman.node.runtime import Runtime

    rt = Runtime(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if tls is not None:  # new connections get the new pair; open ones and the cluster stay
        loop.add_signal_handler(signal.SIGHUP, tls.reload)
    await rt.start()
    host, port = rt.cfg.http_listen
    server = await serve_http(rt, host, port, tls.context if tls is not None else None)
    logging.getLogger("confman").info(
        "node %s serving %s on %s:%d", rt.id, "HTTPS" if tls else "HTTP", host, port
    )
    freeze_startup_heap()
    try:
        await stop.wait()
    finally:
        logging.getLogger("confman").info("node %s stopping", rt.id)
        await server.stop()
        await rt.stop()


# ---------------------------------------------------------------------------------- keys
@main.group()
def keys() -> None:
    """API key helpers."""


@keys.command("hash")
@click.argument("key", required=False)
def keys_hash(key: str | None) -> None:
    """Print the SHA-256 to store in the config for KEY (read from stdin when omitted)."""
    if key is None:
        key = sys.stdin.readline().strip()
    if not key:
        raise click.ClickException("no key given")
    click.echo(hash_key(key))


@keys.command("new")
def keys_new() -> None:
    """Generate a new random API key and print it with its hash."""
    key = "confman_" + secrets.token_urlsafe(32)
    click.echo(f"key:        {key}\nkey_sha256: {hash_key(key)}")


def _register_verify() -> None:
    from confman.verify.command import verify

    main.add_command(verify)


def _register_client() -> None:
    from confman.client.commands import COMMANDS, cluster_status

    for command in COMMANDS:
        main.add_command(command)
    # ``confman status`` is ``confman cluster status`` under its older name, kept so that
    # existing scripts and the README's examples go on working (one implementation).
    main.add_command(cluster_status, name="status")


main.add_command(dev)
_register_verify()
_register_client()

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
