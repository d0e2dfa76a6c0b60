"""Per-request access checks shared by the routes: the caller, its role and its namespace;
and, in the dev profile, the ``Host`` the request names (a DNS-rebinding defence)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from confman.api.auth import Principal, authenticate, require_level, require_namespace
from confman.api.context import CONTEXT, ApiContext
from confman.api.problems import Problem
from confman.api.validation import check_name
from confman.node.config import NodeConfig

#: Names of this machine a dev node answers to, on the port the request came in on.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_HOST_RE = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::([0-9]{1,5}))?\Z")


def caller(request: web.Request, level: int) -> tuple[ApiContext, Principal]:
    """The app context and the authenticated caller, who has at least role ``level``."""
    ctx = request.app[CONTEXT]
    principal = authenticate(request, ctx.keys)
    require_level(principal, level)
    return ctx, principal


def namespace(request: web.Request, principal: Principal) -> str:
    """The valid ``{ns}`` of the path, within the caller's grants (400/403 otherwise)."""
    ns = check_name(request.match_info["ns"], "ns")
    require_namespace(principal, ns)
    return ns


def parse_host(value: str | None, default_port: int) -> tuple[str, int] | None:
    """A ``Host`` value as (lower-case name, port); None when it is not a plain host[:port]."""
    m = _HOST_RE.match(value or "")
    if m is None:
        return None
    port = default_port if m[3] is None else int(m[3])
    if not 0 < port < 65536:
        return None
    return (m[1] or m[2]).lower(), port


class DevHosts:
    """The ``Host`` values a dev-profile node answers: a loopback name (``127.0.0.1``,
    ``localhost``, ``[::1]``) with the port the connection arrived on, or the host:port of
    its advertised or member URL (or of a specific listen address). Anything else may be a
    browser page whose name was rebound to this machine, so it is refused."""

    def __init__(self, cfg: NodeConfig) -> None:
        named: set[tuple[str, int]] = set()
        for url in (cfg.http_advertise, cfg.member.http):
            parts = urlsplit(url)
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:  # not a port: that URL names nothing to accept
                continue
            if parts.hostname:
                named.add((parts.hostname.lower(), port))
        listen_host, listen_port = cfg.http_listen
        if listen_host not in ("", "0.0.0.0", "::"):
            named.add((listen_host.lower(), listen_port))
        self.named = frozenset(named)
        self.listen_port = listen_port

    def allows(self, host: str | None, local_port: int | None, secure: bool = False) -> bool:
        """True when ``host`` (the header's value; None if absent) names this node, for a
        connection accepted on ``local_port`` (None: the configured listen port)."""
        parsed = parse_host(host, 443 if secure else 80)
        if parsed is None:
            return False
        name, port = parsed
        own_port = self.listen_port if local_port is None else local_port
        return (name in LOOPBACK_NAMES and port == own_port) or parsed in self.named


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    sockname = None if transport is None else transport.get_extra_info("sockname")
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def dev_host_guard(ctx: ApiContext) -> Any:
    """Middleware: 421 for a request whose ``Host`` does not name this node (dev profile).
    Register it inside the main middleware, which renders the problem."""
    hosts = DevHosts(ctx.rt.cfg)
    refused = getattr(ctx.rt.metrics, "host_refused", None)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if len(request.headers.getall("Host", ())) > 1 or not hosts.allows(
            host, _local_port(request), request.secure
        ):
            if refused is not None:
                refused.inc()
            shown = "no Host" if host is None else f"Host {host[:100]!r}"
            raise Problem(
                421,
                "Misdirected request",
                f"{shown} does not name this node: in the dev profile it answers only its "
                "own addresses (127.0.0.1, localhost or [::1] with its port, or its "
                "advertised URL)",
                slug="misdirected-request",
            )
        return await handler(request)

    return guard
