"""``/api/v1/namespaces`` and ``/api/v1/namespaces/{ns}`` (and its audit log)."""

from __future__ import annotations

from aiohttp import web

from confman.api.access import caller, namespace
from confman.api.auth import ADMIN, VIEWER
from confman.api.problems import Problem
from confman.api.reads import read_state
from confman.api.responses import json_response, write_headers
from confman.api.validation import (
    check_content_length,
    check_json_content_type,
    idempotency_key,
    int_param,
    read_object,
    str_field,
)
from confman.api.writes import ensure_leader, propose
from confman.node.state.commands import DeleteNamespace, PutNamespace
from confman.node.state.machine import ApplyStatus
from confman.node.state.queries import AUDIT_LIMIT_MAX

NAMESPACES = "/api/v1/namespaces"
#: Any segment routes to the handler, which answers 400 for an invalid name.
NAMESPACE = "/api/v1/namespaces/{ns:[^/]+}"
AUDIT = "/api/v1/namespaces/{ns:[^/]+}/audit"


def namespace_missing(ns: str, headers: dict[str, str]) -> Problem:
    return Problem(404, "Namespace not found", f"No namespace {ns!r}", headers=headers)


async def list_namespaces(request: web.Request) -> web.Response:
    ctx, principal = caller(request, VIEWER)
    items, headers = await read_state(request, ctx, lambda r: r.list_namespaces(principal.grants))
    return json_response(items, headers=headers)


async def get_namespace(request: web.Request) -> web.Response:
    ctx, principal = caller(request, VIEWER)
    ns = namespace(request, principal)
    item, headers = await read_state(request, ctx, lambda r: r.get_namespace(ns))
    if item is None:
        raise namespace_missing(ns, headers)
    return json_response(item, headers=headers)


async def put_namespace(request: web.Request) -> web.Response:
    ctx, principal = caller(request, ADMIN)
    ns = namespace(request, principal)
    key = idempotency_key(request)
    check_json_content_type(request, body_optional=True)
    check_content_length(request, ctx.max_body)
    ensure_leader(request, ctx)
    doc = await read_object(request, ctx.max_body, body_optional=True)
    # As the original service: a namespace without an explicit owner belongs to the caller.
    owner = str_field(doc, "owner")
    if owner is None:
        owner = principal.name
    command = PutNamespace(ns, str_field(doc, "description"), owner)
    result = await propose(request, ctx, principal, command, key)
    headers = write_headers(result)
    if result.status == ApplyStatus.CREATED:
        headers["Location"] = f"{NAMESPACES}/{ns}"
        return json_response(result.value, 201, headers)
    return json_response(result.value, 200, headers)


async def delete_namespace(request: web.Request) -> web.Response:
    ctx, principal = caller(request, ADMIN)
    ns = namespace(request, principal)
    key = idempotency_key(request)
    ensure_leader(request, ctx)
    result = await propose(request, ctx, principal, DeleteNamespace(ns), key)
    headers = write_headers(result)
    if result.status == ApplyStatus.NOT_FOUND:
        raise namespace_missing(ns, headers)
    return web.Response(status=204, headers=headers)


async def get_audit(request: web.Request) -> web.Response:
    ctx, principal = caller(request, VIEWER)
    ns = namespace(request, principal)
    raw = request.query.get("limit")
    limit = 50 if raw is None else int_param(raw, "limit")
    limit = max(1, min(AUDIT_LIMIT_MAX, limit))
    events, headers = await read_state(request, ctx, lambda r: r.audit(ns, limit))
    return json_response(events, headers=headers)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(NAMESPACES, list_namespaces, allow_head=False)
    router.add_get(NAMESPACE, get_namespace, allow_head=False)
    router.add_put(NAMESPACE, put_namespace)
    router.add_delete(NAMESPACE, delete_namespace)
    router.add_get(AUDIT, get_audit, allow_head=False)
