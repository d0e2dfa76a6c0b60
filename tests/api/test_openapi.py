"""The hand-written OpenAPI document: consistent in itself, equal to the router, served as is,
and the response checker the contract tests rely on really catches departures."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from confman.api import create_app
from tests.api.harness import single_node_config
from tests.api.spec import check_response, document, resolve, validate

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if "$ref" in node else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_document_is_openapi_31_and_every_ref_resolves() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    for ref in _refs(doc):
        assert resolve({"$ref": ref}) is not None, ref


def test_operations_are_complete() -> None:
    seen_ids: set[str] = set()
    for template, item in document()["paths"].items():
        declared_path_params = {
            resolve(p)["name"] for p in item.get("parameters", []) if resolve(p)["in"] == "path"
        }
        for method, op in item.items():
            if method not in METHODS:
                continue
            assert op["operationId"] not in seen_ids
            seen_ids.add(op["operationId"])
            params = [resolve(p) for p in op.get("parameters", [])]
            path_params = declared_path_params | {p["name"] for p in params if p["in"] == "path"}
            assert path_params == set(re.findall(r"\{(\w+)\}", template)), template
            statuses = set(op["responses"])
            anonymous = op.get("security") == []
            if method != "head":
                assert "500" in statuses, (method, template)
            if not anonymous:
                assert {"400", "401", "403", "500", "503"} <= statuses, (method, template)
            if method in ("put", "delete"):
                assert {"307", "422"} <= statuses, (method, template)


def test_router_and_document_agree(tmp_path: Path) -> None:
    app = create_app(SimpleNamespace(cfg=single_node_config(tmp_path)))  # type: ignore[arg-type]
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {
        (method, template)
        for template, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert routed == documented


def test_served_document_is_the_file(api: httpx.Client) -> None:
    r = api.get("/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    shipped = resources.files("confman.api").joinpath("openapi.json").read_bytes()
    assert r.content == shipped and json.loads(shipped)["info"]["title"]


def _resp(method: str, path: str, status: int, body: Any, **headers: str) -> httpx.Response:
    ctype = headers.pop("ctype", "application/json")
    return httpx.Response(
        status,
        headers={"Content-Type": ctype, **headers},
        content=json.dumps(body).encode(),
        request=httpx.Request(method, "http://x" + path),
    )


def test_checker_catches_departures() -> None:
    entry = {
        "namespace": "a",
        "key": "b",
        "value": "v",
        "type": "string",
        "version": 1,
        "updatedAt": "2026-02-13T10:00:00.123456Z",
        "updatedBy": "k",
    }
    read = {
        "X-Correlation-Id": "c",
        "X-Confman-Index": "1",
        "X-Confman-Role": "leader",
        "X-Confman-Last-Contact-Ms": "0",
        "ETag": '"1"',
    }
    path = "/api/v1/namespaces/a/config/b"
    assert check_response(_resp("GET", path, 200, entry, **read)) == []
    assert check_response(_resp("GET", path, 201, entry, **read))  # undocumented status
    no_etag = {k: v for k, v in read.items() if k != "ETag"}
    assert check_response(_resp("GET", path, 200, entry, **no_etag))  # missing header
    assert check_response(_resp("GET", path, 200, {**entry, "version": "1"}, **read))
    assert check_response(_resp("GET", path, 200, {**entry, "extra": 1}, **read))
    assert check_response(_resp("GET", path, 200, entry, ctype="text/plain", **read))
    problem = {
        "type": "urn:confman:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": "d",
        "instance": "/x",
        "traceId": "c",
    }
    pj = "application/problem+json"
    cid = {"X-Correlation-Id": "c"}
    assert check_response(_resp("GET", "/x", 404, problem, ctype=pj, **cid)) == []
    assert check_response(_resp("GET", "/x", 404, problem, **cid))  # media type
    assert check_response(_resp("GET", "/x", 404, problem, ctype=pj, **{"X-Correlation-Id": "o"}))
    assert check_response(_resp("GET", "/x", 404, {**problem, "status": 400}, ctype=pj, **cid))
    assert check_response(_resp("GET", "/x", 405, problem, ctype=pj, **cid))  # no Allow
    assert check_response(_resp("GET", "/x", 200, {}, **read))  # undocumented path


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc", True),
        ("a.b-c_D9", True),
        (".", False),
        ("..", False),
        ("...", True),
        ("a/b", False),
        ("", False),
        ("x" * 128, True),
        ("x" * 129, False),
        ("é", False),
    ],
)
def test_name_schema_matches_the_server_rule(value: str, ok: bool) -> None:
    from confman.api.validation import NAME_RE

    schema = {"$ref": "#/components/schemas/Name"}
    assert (validate(value, schema) == []) is ok
    assert bool(NAME_RE.match(value)) is ok
