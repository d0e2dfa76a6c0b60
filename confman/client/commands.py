"""The client side of the ``confman`` command: ``ns``, ``get``, ``put``, ``delete``, ``ls``,
``watch``, ``audit`` and ``cluster status``, on ``confman.client.Client``.

Every command takes ``--endpoints`` (or ``$CONFMAN_ENDPOINTS``), ``--api-key`` (or
``$CONFMAN_API_KEY``), ``--output table|json``, and for https endpoints ``--cacert``,
``--cert`` and ``--key`` (or ``$CONFMAN_CACERT``, ``$CONFMAN_CERT``, ``$CONFMAN_KEY``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import click

from confman.client.core import DEFAULT_ENDPOINTS
from confman.client.errors import ConfmanError
from confman.client.models import Entry, WatchEvent
from confman.client.render import explain, fields, table, to_json
from confman.client.sync import Client
from confman.client.tls import ssl_context

CONSISTENCY = click.Choice(["local", "linearizable", "lease"])


@dataclass(frozen=True, slots=True)
class Options:
    """What every client command takes."""

    endpoints: str
    api_key: str | None
    output: str
    retry_timeout: float
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


_FILE = click.Path(exists=True, dir_okay=False)


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--endpoints``, ``--api-key``, ``--output``, ``--retry-timeout`` and the TLS
    files; the command receives them as ``opts``."""
    return _with_options(f, ("--key", "--cert-key"))


def _with_options(f: Callable[..., Any], key_flags: tuple[str, ...]) -> Callable[..., Any]:

    @functools.wraps(f)
    def command(
        *args: Any,
        endpoints: str,
        api_key: str | None,
        output: str,
        retry_timeout: float,
        cacert: str | None,
        cert: str | None,
        tls_key: str | None,
        **kw: Any,
    ) -> Any:
        opts = Options(endpoints, api_key, output, retry_timeout, cacert, cert, tls_key)
        return f(*args, opts=opts, **kw)

    options = [
        click.option(
            "--endpoints",
            envvar="CONFMAN_ENDPOINTS",
            default=DEFAULT_ENDPOINTS,
            show_default=True,
            help="Comma-separated node URLs (also $CONFMAN_ENDPOINTS).",
        ),
        click.option(
            "--api-key",
            envvar="CONFMAN_API_KEY",
            default=None,
            help="API key (default: $CONFMAN_API_KEY).",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Choice(["table", "json"]),
            default="table",
            show_default=True,
            help="Human-friendly table or JSON (the API's shapes).",
        ),
        click.option(
            "--retry-timeout",
            type=click.FloatRange(0, 3600),
            default=30.0,
            show_default=True,
            help="Seconds to keep retrying when no leader or node answers.",
        ),
        click.option(
            "--cacert",
            envvar="CONFMAN_CACERT",
            type=_FILE,
            default=None,
            help="CA certificate(s) (PEM) to trust for https endpoints (also $CONFMAN_CACERT).",
        ),
        click.option(
            "--cert",
            envvar="CONFMAN_CERT",
            type=_FILE,
            default=None,
            help="Client certificate (PEM) for nodes that require one (also $CONFMAN_CERT).",
        ),
        click.option(
            *key_flags,
            "tls_key",
            envvar="CONFMAN_KEY",
            type=_FILE,
            default=None,
            help="Private key of --cert, unless in that file (also $CONFMAN_KEY).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextmanager
def connect(opts: Options) -> Iterator[Client]:
    """A client; its errors become one-line messages and exit status 1."""
    try:
        ssl_context(opts.cacert, opts.cert, opts.key)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cacert/--cert/--key") from None
    try:
        client = Client(
            opts.endpoints,
            opts.api_key,
            retry_timeout=opts.retry_timeout,
            cacert=opts.cacert,
            cert=opts.cert,
            key=opts.key,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--endpoints") from None
    try:
        with client:
            yield client
    except ConfmanError as exc:
        raise click.ClickException(explain(exc, client.endpoints)) from None


def _emit(output: str, data: Any, human: Callable[[], str]) -> None:
    click.echo(to_json(data) if output == "json" else human())


def _if_match(raw: str | None) -> int | Literal["*"] | None:
    if raw is None:
        return None
    text = raw.strip().strip('"')
    if text == "*":
        return "*"
    if not text.isdigit():
        raise click.BadParameter("a version number or '*'", param_hint="--if-match")
    return int(text)


def _entry_rows(items: list[Entry], with_ns: bool) -> str:
    head = ["namespace"] if with_ns else []
    rows = [
        ([e.namespace] if with_ns else []) + [e.key, e.value, e.type, e.version, e.updated_at]
        for e in items
    ]
    return table([*head, "key", "value", "type", "version", "updated"], rows)


# ---------------------------------------------------------------------------------- ns
@click.group("ns")
def ns_group() -> None:
    """Namespaces: list, create (or update), delete."""


@ns_group.command("list")
@common_options
def ns_list(opts: Options) -> None:
    """List the namespaces the API key may see."""
    with connect(opts) as c:
        items = c.namespaces()
    _emit(
        opts.output,
        items,
        lambda: table(
            ["namespace", "description", "owner", "created"],
            [(n.path, n.description, n.owner, n.created_at) for n in items],
        ),
    )


@ns_group.command("create")
@click.argument("namespace")
@click.option("--description", "-d", default=None, help="What the namespace holds.")
@click.option("--owner", default=None, help="Who owns it.")
@common_options
def ns_create(namespace: str, description: str | None, owner: str | None, opts: Options) -> None:
    """Create NAMESPACE (or replace its description and owner)."""
    with connect(opts) as c:
        ns = c.put_namespace(namespace, description=description, owner=owner)
    _emit(opts.output, ns, lambda: f"namespace {ns.path} saved (created {ns.created_at})")


@ns_group.command("delete")
@click.argument("namespace")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
def ns_delete(namespace: str, yes: bool, opts: Options) -> None:
    """Delete NAMESPACE and every entry in it."""
    if not yes:
        click.confirm(f"Delete namespace {namespace!r} and all its entries?", abort=True)
    with connect(opts) as c:
        index = c.delete_namespace(namespace)
    _emit(
        opts.output,
        {"namespace": namespace, "deleted": True, "index": index},
        lambda: f"namespace {namespace} deleted (index {index})",
    )


# ---------------------------------------------------------------------------------- entries
@click.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option("--raw", "-r", is_flag=True, help="Print only the value.")
@click.option("--consistency", type=CONSISTENCY, default=None, help="Read consistency.")
@click.option("--min-index", type=click.IntRange(0), default=None, help="Wait for this index.")
@common_options
def get_cmd(
    namespace: str, key: str, raw: bool, consistency: Any, min_index: int | None, opts: Options
) -> None:
    """Show the entry KEY of NAMESPACE."""
    with connect(opts) as c:
        e = c.get(namespace, key, consistency=consistency, min_index=min_index)
    if raw:
        click.echo(e.value)
        return
    pairs = [
        ("namespace", e.namespace),
        ("key", e.key),
        ("value", e.value),
        ("type", e.type),
        ("version", e.version),
        ("updated", e.updated_at),
        ("by", e.updated_by),
        ("as of", e.index),  # the applied index of the state read
    ]
    _emit(opts.output, e, lambda: fields(pairs))


@click.command("put")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option("--type", "type_", default=None, help="Type tag (default: string).")
@click.option("--if-match", default=None, help="Only at this version ('*': only if it exists).")
@click.option("--create-only", is_flag=True, help="Fail if the entry exists.")
@common_options
def put_cmd(
    namespace: str,
    key: str,
    value: str,
    type_: str | None,
    if_match: str | None,
    create_only: bool,
    opts: Options,
) -> None:
    """Set KEY of NAMESPACE to VALUE ('-' reads the value from stdin)."""
    if value == "-":
        value = sys.stdin.read()
    expected = _if_match(if_match)
    with connect(opts) as c:
        e = c.put(namespace, key, value, type=type_, if_match=expected, create_only=create_only)
    verb = "created" if e.version == 1 else "updated"
    _emit(
        opts.output,
        e,
        lambda: f"{verb} {e.namespace}/{e.key} version {e.version} (index {e.index})",
    )


@click.command("delete")
@click.argument("namespace")
@click.argument("key")
@click.option("--if-match", default=None, help="Only at this version ('*': only if it exists).")
@common_options
def delete_cmd(namespace: str, key: str, if_match: str | None, opts: Options) -> None:
    """Delete the entry KEY of NAMESPACE."""
    expected = _if_match(if_match)
    with connect(opts) as c:
        index = c.delete(namespace, key, if_match=expected)
    _emit(
        opts.output,
        {"namespace": namespace, "key": key, "deleted": True, "index": index},
        lambda: f"deleted {namespace}/{key} (index {index})",
    )


@click.command("ls")
@click.argument("namespace", required=False)
@click.option("--consistency", type=CONSISTENCY, default=None, help="Read consistency.")
@common_options
def ls_cmd(namespace: str | None, consistency: Any, opts: Options) -> None:
    """List the entries of NAMESPACE (or of every namespace the key may see)."""
    with connect(opts) as c:
        items = c.entries(namespace, consistency=consistency)
    _emit(opts.output, items, lambda: _entry_rows(items, namespace is None))


@click.command("audit")
@click.argument("namespace")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True)
@common_options
def audit_cmd(namespace: str, limit: int, opts: Options) -> None:
    """Show the audit log of NAMESPACE, newest first."""
    with connect(opts) as c:
        events = c.audit(namespace, limit=limit)
    _emit(
        opts.output,
        events,
        lambda: table(
            ["time", "action", "actor", "key", "old", "new"],
            [(e.timestamp, e.action, e.actor, e.key, e.old_value, e.new_value) for e in events],
        ),
    )


# ---------------------------------------------------------------------------------- watch
def _event_line(ev: WatchEvent) -> str:
    name = ev.namespace if ev.key is None else f"{ev.namespace}/{ev.key}"
    version = "" if ev.version is None else f" v{ev.version}"
    value = "" if ev.value is None else f" = {ev.value}"
    return f"{ev.index:>8}  {ev.type:<17} {name}{version}{value}"


@click.command("watch")
@click.argument("namespace", required=False)
@click.option("--key", "-k", default=None, help="Only this key of NAMESPACE.")
@click.option("--prefix", "-p", default=None, help="Only keys of NAMESPACE with this prefix.")
@click.option("--since", type=click.IntRange(0), default=None, help="Start after this index.")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after N changes.")
@functools.partial(_with_options, key_flags=("--cert-key",))  # --key filters here
def watch_cmd(
    namespace: str | None,
    key: str | None,
    prefix: str | None,
    since: int | None,
    count: int | None,
    opts: Options,
) -> None:
    """Print changes as they are committed (Ctrl-C stops); resumes across failovers."""
    if (key or prefix) and namespace is None:
        raise click.UsageError("--key and --prefix need a NAMESPACE")
    seen = 0
    with (
        connect(opts) as c,
        c.watch(namespace, key=key, prefix=prefix, since=since) as w,
    ):
        try:
            for ev in w:
                click.echo(to_json(ev, pretty=False) if opts.output == "json" else _event_line(ev))
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


# ---------------------------------------------------------------------------------- cluster
@click.group("cluster")
def cluster_group() -> None:
    """The cluster's members."""


@cluster_group.command("status")
@common_options
def cluster_status(opts: Options) -> None:
    """Each endpoint's role, term, leader and indexes; exit status 1 without a leader.

    Also available as `confman status`, its older name."""
    with connect(opts) as c:
        nodes = c.cluster_status()
    _emit(
        opts.output,
        nodes,
        lambda: table(
            ["endpoint", "node", "status", "role", "term", "leader", "commit", "applied"],
            [
                (
                    n.endpoint,
                    n.node_id,
                    ("ready" if n.ready else "not ready") if n.reachable else "unreachable",
                    n.role,
                    n.term,
                    n.leader,
                    n.commit_index,
                    n.applied_index,
                )
                for n in nodes
            ],
        ),
    )
    if not any(n.role == "leader" and n.ready for n in nodes):
        raise SystemExit(1)


COMMANDS: list[click.Command] = [
    ns_group,
    get_cmd,
    put_cmd,
    delete_cmd,
    ls_cmd,
    watch_cmd,
    audit_cmd,
    cluster_group,
]
