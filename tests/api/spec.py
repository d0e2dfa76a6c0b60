"""Checks responses against confman/api/openapi.json: status documented for the operation,
media type, required headers and the body against its schema (a small JSON Schema subset
validator: the keywords the document uses)."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

import httpx

Schema = dict[str, Any]


@cache
def document() -> dict[str, Any]:
    return json.loads(resources.files("confman.api").joinpath("openapi.json").read_text())


def resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = document()
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


@cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for template in document()["paths"]:
        rx = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        out.append((re.compile(rx + r"\Z"), template))
    return out


def find_template(path: str) -> str | None:
    """The path template of the document that ``path`` (raw, no query) matches."""
    for rx, template in _templates():
        if rx.match(path):
            return template
    return None


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def validate(value: Any, schema: Schema, where: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema`` (empty when valid)."""
    schema = resolve(schema)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            return [f"{where}: {value!r:.60} is not of type {types}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r:.60} does not match {schema['pattern']}")
    if _is_type(value, "integer") and value < schema.get("minimum", value):
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing {name!r}")
        for name, item in value.items():
            if name in props:
                errors += validate(item, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected member {name!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{where}[{i}]")
    return errors


def operation(method: str, template: str) -> dict[str, Any] | None:
    return document()["paths"][template].get(method.lower())


def check_response(resp: httpx.Response) -> list[str]:
    """Every way ``resp`` departs from the document (empty when it conforms)."""
    req = resp.request
    path = req.url.raw_path.decode().split("?", 1)[0]
    if "X-Correlation-Id" not in resp.headers:
        return [f"{req.method} {path}: no X-Correlation-Id"]
    template = find_template(path)
    problems: list[str] = []
    if template is None or operation(req.method, template) is None:
        # Not an operation of the document: a 404/405 problem, or a CORS preflight's answer
        # (described in the document's introduction): 204, or 403 for another origin.
        if resp.status_code == 204 and req.method == "OPTIONS":
            return []
        allowed = (403, 404, 405) if req.method == "OPTIONS" else (404, 405)
        if resp.status_code not in allowed:
            return [f"{req.method} {path}: undocumented, answered {resp.status_code}"]
        if resp.status_code == 405 and "Allow" not in resp.headers:
            problems.append(f"{req.method} {path}: 405 without Allow")
        return problems + _check_body(
            resp, {"application/problem+json": {"schema": _problem_schema()}}
        )
    op = operation(req.method, template)
    assert op is not None
    documented = resolve(op["responses"].get(str(resp.status_code)))
    where = f"{req.method} {template} -> {resp.status_code}"
    if documented is None:
        return [f"{where}: status not documented"]
    for name, header in documented.get("headers", {}).items():
        header = resolve(header)
        if header.get("required") and name not in resp.headers:
            problems.append(f"missing header {name}")
    return [f"{where}: {p}" for p in problems + _check_body(resp, documented.get("content"))]


@cache
def _problem_schema() -> Schema:
    return {"$ref": "#/components/schemas/Problem"}


def _check_body(resp: httpx.Response, content: dict[str, Any] | None) -> list[str]:
    if resp.request.method == "HEAD" or resp.status_code in (204, 304, 307):
        return [] if not resp.content else ["unexpected body"]
    if not content:
        return [] if not resp.content else ["body where none is documented"]
    mtype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if mtype not in content:
        return [f"media type {mtype!r} not in {sorted(content)}"]
    schema = content[mtype].get("schema", {})
    if mtype.endswith("json"):
        try:
            body = resp.json()
        except ValueError as exc:
            return [f"invalid JSON body: {exc}"]
        errors = validate(body, schema)
        if mtype == "application/problem+json" and not errors:
            if body["status"] != resp.status_code:
                errors.append("problem status differs from the HTTP status")
            if body["traceId"] != resp.headers["X-Correlation-Id"]:
                errors.append("traceId differs from X-Correlation-Id")
        return errors
    return []


class CheckedClient(httpx.Client):
    """An httpx client that asserts every response conforms to the OpenAPI document."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        resp = super().send(request, **kwargs)
        resp.read()
        errors = check_response(resp)
        assert not errors, "\n".join(errors)
        assert resp.status_code < 500 or resp.status_code in (503, 504), (
            f"{request.method} {request.url}: {resp.status_code} {resp.text[:300]}"
        )
        return resp
