"""Output of the CLI: aligned tables for people, JSON (the API's camelCase shapes) for tools,
and one-line explanations of errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson

from confman.client.errors import (
    ApiError,
    ConfmanError,
    ConnectionFailed,
    Forbidden,
    HistoryCompacted,
    IdempotencyKeyReused,
    PreconditionFailed,
    Unauthorized,
    UntrustedEndpoint,
)

#: Longest cell in a table (values can be long JSON documents; use --output json for all).
CELL_MAX = 60


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def as_json_value(obj: Any) -> Any:
    """Dataclasses as the API's camelCase objects, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            _camel(f.name): as_json_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)
        }
    if isinstance(obj, list | tuple):
        return [as_json_value(x) for x in obj]
    return obj


def to_json(obj: Any, *, pretty: bool = True) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(as_json_value(obj), option=option).decode()


def cell(value: Any) -> str:
    """A value as one short table cell."""
    if value is None:
        return "-"
    text = str(value).replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns under upper-case headers (trailing spaces trimmed)."""
    cells = [[h.upper() for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """A vertical table: one ``name  value`` line each."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {'-' if v is None else v}" for name, v in pairs)


def explain(exc: ConfmanError, endpoints: Sequence[str]) -> str:
    """One or two sentences a person can act on."""
    if isinstance(exc, ConnectionFailed):
        text = f"Cannot reach the cluster ({', '.join(endpoints)}): {exc}"
        if exc.outcome_unknown:
            text += ". The write may or may not have been applied; check before retrying"
        return text
    if isinstance(exc, UntrustedEndpoint):
        return f"{exc} (list that node in --endpoints if it belongs to the cluster)"
    if not isinstance(exc, ApiError):
        return str(exc)
    text = f"{exc.title}: {exc.detail}"
    if isinstance(exc, Unauthorized):
        text += " (set CONFMAN_API_KEY or pass --api-key)"
    elif isinstance(exc, Forbidden):
        text += " (the API key lacks the role or the namespace grant)"
    elif (
        isinstance(exc, PreconditionFailed)
        and exc.current_version is not None
        and "current" not in exc.detail
    ):
        text += f" (current version: {exc.current_version})"
    elif isinstance(exc, HistoryCompacted):
        text = f"{exc.title}: list the current state and watch from its index ({exc.detail})"
    elif isinstance(exc, IdempotencyKeyReused):
        text += " (use a new idempotency key for a different request)"
    if exc.status >= 500 and exc.correlation_id:
        text += f" [traceId {exc.correlation_id}]"
    return text
