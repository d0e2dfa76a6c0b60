"""docs/api.md, the API reference for people, and confman/api/openapi.json, the one the node
serves, describe the same operations with the same response statuses.

The reference marks each operation with a heading ``### `METHOD /path` `` followed (before the
next heading) by exactly one line ``Responses: 200, 404, ...``. Any ``###`` heading that starts
with an HTTP method must have that exact form, so a misspelt heading is reported instead of
being skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.api.spec import document

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS")
_ANY_METHOD = "|".join(METHODS)
_METHOD_HEADING = re.compile(rf"^###\s+`?(?:{_ANY_METHOD})\b")
_OPERATION = re.compile(rf"^### `({_ANY_METHOD}) (/\S*)`$")
_RESPONSES = re.compile(r"^Responses: (\d{3}(?:, \d{3})*)$")

Operations = dict[tuple[str, str], list[str]]


def parse(text: str) -> Operations:
    """``{(METHOD, path): [status, ...]}`` of a reference written in the convention above;
    AssertionError on any departure from it."""
    ops: Operations = {}
    current: tuple[str, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"docs/api.md:{number}: {line!r}"
        if line.startswith("#"):
            if current is not None:
                assert ops[current], f"{current} has no 'Responses:' line before {where}"
            current = None
            if _METHOD_HEADING.match(line):
                match = _OPERATION.match(line)
                assert match, f"{where}: an operation heading is ### `METHOD /path`"
                current = (match[1], match[2])
                assert current not in ops, f"{where}: {current} is described twice"
                ops[current] = []
            continue
        if line.startswith("Responses:"):
            match = _RESPONSES.match(line)
            assert match, f"{where}: write 'Responses: 200, 404, ...'"
            assert current is not None, f"{where}: 'Responses:' outside an operation"
            assert not ops[current], f"{where}: a second 'Responses:' line for {current}"
            statuses = match[1].split(", ")
            assert len(set(statuses)) == len(statuses), f"{where}: a status is repeated"
            ops[current] = statuses
    if current is not None:
        assert ops[current], f"{current} has no 'Responses:' line"
    return ops


def served() -> dict[tuple[str, str], set[str]]:
    """``{(METHOD, path): {status, ...}}`` of the OpenAPI document."""
    out = {}
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method.upper() in METHODS:
                out[(method.upper(), path)] = set(op["responses"])
    return out


def differences(ops: Operations) -> list[str]:
    """What is in one of the reference and the OpenAPI document but not in the other."""
    spec = served()
    out = [f"{m} {p}: in openapi.json, not in docs/api.md" for m, p in sorted(spec.keys() - ops)]
    out += [f"{m} {p}: in docs/api.md, not in openapi.json" for m, p in sorted(ops.keys() - spec)]
    for op in sorted(spec.keys() & ops.keys()):
        documented = set(ops[op])
        for status in sorted(spec[op] - documented):
            out.append(f"{op[0]} {op[1]}: status {status} in openapi.json, not in docs/api.md")
        for status in sorted(documented - spec[op]):
            out.append(f"{op[0]} {op[1]}: status {status} in docs/api.md, not in openapi.json")
    return out


def test_reference_and_openapi_have_the_same_operations_and_statuses() -> None:
    ops = parse(DOC.read_text(encoding="utf-8"))
    assert ops, "no operation found in docs/api.md"
    assert differences(ops) == []


def test_statuses_are_in_ascending_order() -> None:
    """Statuses are written in ascending order, so a reader can scan them."""
    for op, statuses in parse(DOC.read_text(encoding="utf-8")).items():
        assert statuses == sorted(statuses), op


# The checks themselves: each kind of departure is caught.


def _doc_without(line: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(line + "\n") == 1, line
    return text.replace(line + "\n", "", 1)


def test_a_missing_operation_is_reported() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("### `HEAD /health`\n")
    end = text.index("### ", start + 4)
    found = differences(parse(text[:start] + text[end:]))
    assert found == ["HEAD /health: in openapi.json, not in docs/api.md"]


def test_a_missing_or_extra_status_is_reported() -> None:
    text = DOC.read_text(encoding="utf-8")
    line = "Responses: 200, 307, 400, 401, 403, 404, 500, 503, 504"
    heading = "### `GET /api/v1/namespaces/{ns}`\n"
    start = text.index(heading)
    assert text.index(line, start) < text.index("### ", start + 4)
    missing = text[:start] + text[start:].replace(line, line.replace(" 404,", ""), 1)
    assert differences(parse(missing)) == [
        "GET /api/v1/namespaces/{ns}: status 404 in openapi.json, not in docs/api.md"
    ]
    extra = text[:start] + text[start:].replace(line, line.replace("403,", "403, 405,"), 1)
    assert differences(parse(extra)) == [
        "GET /api/v1/namespaces/{ns}: status 405 in docs/api.md, not in openapi.json"
    ]


def test_an_unknown_operation_is_reported() -> None:
    text = DOC.read_text(encoding="utf-8") + "\n### `POST /api/v1/things`\n\nResponses: 200\n"
    assert differences(parse(text)) == ["POST /api/v1/things: in docs/api.md, not in openapi.json"]


@pytest.mark.parametrize(
    "broken, message",
    [
        ("### GET /health\n\nResponses: 200\n", "an operation heading is"),
        ("### `GET /extra`\n\nsome text\n", "has no 'Responses:' line"),
        ("### `GET /extra`\n\nResponses: 200, 500\nResponses: 200\n", "a second 'Responses:'"),
        ("### `GET /extra`\n\nResponses: 200 500\n", "write 'Responses: 200, 404, ...'"),
        ("### `GET /health`\n\nResponses: 200, 500\n", "is described twice"),
    ],
)
def test_a_reference_off_the_convention_is_refused(broken: str, message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        parse(DOC.read_text(encoding="utf-8") + "\n" + broken)


def test_a_removed_responses_line_is_refused() -> None:
    with pytest.raises(AssertionError, match="has no 'Responses:' line"):
        parse(_doc_without("Responses: 200, 404, 500"))
