"""Per-request access checks shared by the routes: the caller, its role and its namespace."""

from __future__ import annotations

from aiohttp import web

from confman.api.auth import Principal, authenticate, require_level, require_namespace
from confman.api.context import CONTEXT, ApiContext
from confman.api.validation import check_name


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
