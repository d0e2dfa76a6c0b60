"""Configuration entries: ``/api/v1/namespaces/{ns}/config[/{key}]`` and ``/api/v1/configs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from aiohttp import web

from confman.api.access import caller, namespace
from confman.api.auth import EDITOR, VIEWER, Principal
from confman.api.context import ApiContext
from confman.api.problems import Problem, bad_request
from confman.api.reads import read_entry_locally, read_state
from confman.api.responses import etag, json_response, write_headers
from confman.api.routes_namespaces import namespace_missing
from confman.api.validation import (
    check_content_length,
    check_json_content_type,
    check_name,
    idempotency_key,
    parse_etags,
    read_object,
    str_field,
)
from confman.api.writes import ensure_leader, precondition_failed, propose
from confman.node.state.commands import Command, DeleteConfig, PutConfig
from confman.node.state.machine import ApplyResult, ApplyStatus

ENTRIES = "/api/v1/namespaces/{ns:[^/]+}/config"
ENTRY = "/api/v1/namespaces/{ns:[^/]+}/config/{key:[^/]+}"
#: ENTRY's canonical path: its label in the request metrics.
ENTRY_ROUTE = "/api/v1/namespaces/{ns}/config/{key}"
ALL_ENTRIES = "/api/v1/configs"
_TYPE_MAX = 64


def entry_url(ns: str, key: str) -> str:
    return f"/api/v1/namespaces/{ns}/config/{key}"


def entry_missing(ns: str, key: str, headers: dict[str, str]) -> Problem:
    return Problem(
        404, "Configuration not found", f"No key {key!r} in namespace {ns!r}", headers=headers
    )


def _names(request: web.Request, principal: Principal) -> tuple[str, str]:
    ns = namespace(request, principal)
    return ns, check_name(request.match_info["key"], "key")


async def list_all(request: web.Request) -> web.Response:
    ctx, principal = caller(request, VIEWER)
    items, headers = await read_state(request, ctx, lambda r: r.list_all_entries(principal.grants))
    return json_response(items, headers=headers)


async def list_entries(request: web.Request) -> web.Response:
    ctx, principal = caller(request, VIEWER)
    ns = namespace(request, principal)
    items, headers = await read_state(
        request, ctx, lambda r: r.list_entries(ns) if r.get_namespace(ns) else None
    )
    if items is None:
        raise namespace_missing(ns, headers)
    return json_response(items, headers=headers)


async def get_entry(request: web.Request) -> web.Response:
    ctx, principal = caller(request, VIEWER)
    ns, key = _names(request, principal)
    if_none = request.headers.get("If-None-Match")
    tags = parse_etags(if_none, "If-None-Match") if if_none is not None else []
    found = read_entry_locally(request, ctx, ns, key)
    item: dict[str, Any] | None
    if found is not None:
        item, headers = found
    else:
        item, headers = await read_state(request, ctx, lambda r: r.get_entry(ns, key))
    if item is None:
        raise entry_missing(ns, key, headers)
    version = item["version"]
    headers["ETag"] = etag(version)
    if tags is None or any(v == version for _, v in tags):  # weak comparison
        return web.Response(status=304, headers=headers)
    return json_response(item, headers=headers)


def _if_match(request: web.Request) -> tuple[int | None, bool]:
    """(expected version, any version) from If-Match."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None, False
    tags = parse_etags(raw, "If-Match")
    if tags is None:
        return None, True
    if len(tags) != 1 or tags[0][0]:
        raise bad_request("If-Match", 'use "*" or exactly one strong entity tag such as "3"')
    return tags[0][1], False


async def _propose_versioned(
    request: web.Request,
    ctx: ApiContext,
    principal: Principal,
    make: type[PutConfig] | type[DeleteConfig],
    fields: Mapping[str, Any],
    ns: str,
    key: str,
) -> ApplyResult:
    """Propose with the precondition of If-Match (a version, or ``*``: must exist)."""
    expected, any_version = _if_match(request)
    command: Command = make(
        namespace=ns, key=key, expected_version=expected, must_exist=any_version, **fields
    )
    return await propose(request, ctx, principal, command, idempotency_key(request))


async def put_entry(request: web.Request) -> web.Response:
    ctx, principal = caller(request, EDITOR)
    ns, key = _names(request, principal)
    create_only = False
    if_none = request.headers.get("If-None-Match")
    if if_none is not None:
        if parse_etags(if_none, "If-None-Match") is not None:
            raise bad_request("If-None-Match", 'only "*" (create only) is supported on PUT')
        create_only = True
    _if_match(request)
    idempotency_key(request)
    check_json_content_type(request)
    check_content_length(request, ctx.max_body)
    ensure_leader(request, ctx)
    doc = await read_object(request, ctx.max_body)
    fields = put_fields(doc, create_only)
    result = await _propose_versioned(request, ctx, principal, PutConfig, fields, ns, key)
    return put_answer(result, ns, key)


class PutFields(TypedDict):
    """The fields of a PutConfig that come from the request body and headers."""

    value: str
    type: str
    create_only: bool


def put_fields(doc: dict[str, Any], create_only: bool) -> PutFields:
    """The fields of a PutConfig from the request body (a Problem when one is invalid)."""
    value = str_field(doc, "value", required=True)
    type_ = str_field(doc, "type", empty=False, max_len=_TYPE_MAX) or "string"
    assert value is not None
    return {"value": value, "type": type_, "create_only": create_only}


def put_answer(result: ApplyResult, ns: str, key: str) -> web.Response:
    """The response to an applied PUT of an entry (or the Problem it raises)."""
    headers = write_headers(result)
    if result.status == ApplyStatus.NOT_FOUND:
        raise namespace_missing(ns, headers)
    if result.status == ApplyStatus.PRECONDITION_FAILED:
        raise precondition_failed(result)
    assert result.value is not None
    headers["ETag"] = etag(result.value["version"])
    if result.status == ApplyStatus.CREATED:
        headers["Location"] = entry_url(ns, key)
        return json_response(result.value, 201, headers)
    return json_response(result.value, 200, headers)


async def delete_entry(request: web.Request) -> web.Response:
    ctx, principal = caller(request, EDITOR)
    ns, key = _names(request, principal)
    _if_match(request)
    idempotency_key(request)
    ensure_leader(request, ctx)
    result = await _propose_versioned(request, ctx, principal, DeleteConfig, {}, ns, key)
    headers = write_headers(result)
    if result.status == ApplyStatus.NOT_FOUND:
        if result.detail == "Namespace not found":
            raise namespace_missing(ns, headers)
        raise entry_missing(ns, key, headers)
    if result.status == ApplyStatus.PRECONDITION_FAILED:
        raise precondition_failed(result)
    return web.Response(status=204, headers=headers)


def add_routes(router: web.UrlDispatcher) -> None:
    # The hot routes first: aiohttp tries the resources under one path prefix in order.
    router.add_get(ENTRY, get_entry, allow_head=False)
    router.add_put(ENTRY, put_entry)
    router.add_delete(ENTRY, delete_entry)
    router.add_get(ENTRIES, list_entries, allow_head=False)
    router.add_get(ALL_ENTRIES, list_all, allow_head=False)
