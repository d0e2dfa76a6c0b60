"""Input checks: names, bounded bodies, strict JSON objects, query parameters and headers.

Every failure is a ``Problem`` (400/413/415) naming the field; nothing here can raise
anything else for any input.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from aiohttp import web

from confman.api.problems import Problem, bad_request

#: Names of namespaces and keys: 1-128 of ``A-Za-z0-9._-``, and not ``.`` or ``..`` (they
#: would be rewritten by URL normalisation; names are never used as file paths anyway).
NAME_RE = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9._-]{1,128}\Z")
#: Correlation ids we echo; anything else is replaced by a generated one.
CORRELATION_RE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}\Z")
#: Idempotency keys: visible ASCII, no spaces (a UUID fits).
IDEMPOTENCY_RE = re.compile(r"[\x21-\x7e]{1,255}\Z")
_ETAG_RE = re.compile(r'(W/)?"(\d{1,18})"\Z')
_READ_CHUNK = 1 << 16
#: The body as read, kept on the request so a write can still be forwarded after reading it.
RAW_BODY = web.RequestKey("confman_raw_body", bytes)


def check_name(value: str, field: str) -> str:
    """``value`` if it is a valid namespace/key name, else 400 naming ``field``."""
    if NAME_RE.match(value):
        return value
    shown = value if len(value) <= 40 else value[:40] + "..."
    raise bad_request(
        field,
        f"invalid name {shown!r}: use 1-128 characters of A-Z a-z 0-9 . _ - (not '.' or '..')",
        "Invalid name",
    )


# -- bodies -----------------------------------------------------------------------------


def check_json_content_type(request: web.Request, *, body_optional: bool = False) -> None:
    """415 unless the body is declared as UTF-8 JSON (a missing type is fine for no body)."""
    declared = request.headers.get("Content-Type")
    if declared is None:
        if body_optional and not request.body_exists:
            return
        raise Problem(415, detail="Content-Type must be application/json")
    ctype = request.content_type
    if ctype != "application/json" and not (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raise Problem(415, detail=f"Content-Type must be application/json, not {ctype!r}")
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise Problem(415, detail=f"JSON bodies must be UTF-8, not {charset!r}")


def check_content_length(request: web.Request, limit: int) -> None:
    """413 early when the declared length is over ``limit`` (no byte of it is read)."""
    length = request.content_length
    if length is not None and length > limit:
        raise Problem(
            413, detail=f"Request body of {length} bytes exceeds the limit of {limit}", close=True
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, reading at most ``limit`` + one chunk; 413 beyond ``limit``."""
    check_content_length(request, limit)
    if not request.body_exists:
        return b""
    buf = bytearray()
    while True:
        chunk = await request.content.read(_READ_CHUNK)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise Problem(
                413, detail=f"Request body exceeds the limit of {limit} bytes", close=True
            )
    request[RAW_BODY] = body = bytes(buf)
    return body


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise _DuplicateKey(k)
        seen[k] = v
    return seen


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


_SCALARS = (str, int, float, bool, type(None))


def _surely_unique_keys(body: bytes, doc: dict[str, Any]) -> bool:
    """True when ``doc`` (parsed from ``body``) cannot have had a duplicate key: a flat
    object, no escapes anywhere, and each key's quoted name occurs once in the text.
    Otherwise the caller runs the full (slower) check."""
    if b"\\" in body:
        return False
    for k, v in doc.items():
        if not isinstance(v, _SCALARS) or body.count(b'"' + k.encode() + b'"') != 1:
            return False
    return True


def parse_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object: strict UTF-8, no duplicate keys, else 400."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as ude:
            raise bad_request(
                "body", f"not valid UTF-8 (byte {ude.start})", "Malformed JSON"
            ) from None
        raise bad_request("body", f"malformed JSON: {exc}", "Malformed JSON") from None
    if not isinstance(doc, dict):
        raise bad_request("body", "must be a JSON object", "Malformed JSON")
    if _surely_unique_keys(body, doc):
        return doc
    # orjson keeps the last of duplicate keys; the stdlib parser lets us see them all.
    try:
        json.loads(body, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as dup:
        raise bad_request(
            dup.key[:64], "duplicate key in the JSON object", "Malformed JSON"
        ) from None
    except RecursionError:
        raise bad_request("body", "JSON nested too deeply", "Malformed JSON") from None
    except ValueError as exc:  # not reached for what orjson accepted; belt and braces
        raise bad_request("body", f"malformed JSON: {exc}", "Malformed JSON") from None
    return doc


async def read_object(
    request: web.Request, limit: int, *, body_optional: bool = False
) -> dict[str, Any]:
    """Content type, bounded read and strict parse of a JSON object body."""
    check_json_content_type(request, body_optional=body_optional)
    body = await read_body(request, limit)
    if not body.strip():
        if body_optional:
            return {}
        raise bad_request("body", "a JSON object is required", "Malformed JSON")
    return parse_object(body)


def str_field(
    doc: dict[str, Any],
    field: str,
    *,
    required: bool = False,
    nullable: bool = True,
    empty: bool = True,
    max_len: int | None = None,
) -> str | None:
    """A string member of ``doc`` (None when absent or null), else 400 naming it."""
    if field not in doc:
        if required:
            raise bad_request(field, "required")
        return None
    value = doc[field]
    if value is None:
        if nullable and not required:
            return None
        raise bad_request(field, "must be a string, not null")
    if not isinstance(value, str):
        raise bad_request(field, f"must be a string, not {_json_type(value)}")
    if not empty and not value:
        raise bad_request(field, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise bad_request(field, f"must be at most {max_len} characters")
    return value


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


# -- query parameters and headers --------------------------------------------------------


_INT_RE = re.compile(r"-?[0-9]{1,19}\Z")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int_param(raw: str, field: str, *, minimum: int = INT64_MIN) -> int:
    """A decimal 64-bit integer parameter >= ``minimum``, else 400 naming ``field``."""
    text = raw.strip()
    if not _INT_RE.match(text):
        raise bad_request(field, f"must be an integer, not {raw[:40]!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise bad_request(field, "must be a 64-bit integer")
    if value < minimum:
        raise bad_request(field, f"must be >= {minimum}")
    return value


_DURATION_RE = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?)(ms|s|m)?\Z")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def duration_param(raw: str, field: str, *, low: float, high: float) -> float:
    """A duration such as ``30s``, ``500ms``, ``2m`` or ``1.5`` (seconds), within
    [``low``, ``high``] seconds, else 400 naming ``field``."""
    m = _DURATION_RE.match(raw.strip())
    if m is None:
        raise bad_request(field, f"must be a duration such as 30s, 500ms or 2m, not {raw[:40]!r}")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not low <= seconds <= high:
        raise bad_request(field, f"must be between {low:g}s and {high:g}s")
    return seconds


def bool_param(raw: str, field: str) -> bool:
    """``true``/``false`` (or ``1``/``0``), else 400 naming ``field``."""
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise bad_request(field, f"must be true or false, not {raw[:40]!r}")


def forward_param(request: web.Request) -> bool | None:
    """``?forward=`` (forward a write to the leader instead of redirecting), if given."""
    raw = request.query.get("forward")
    return None if raw is None else bool_param(raw, "forward")


def parse_etags(header: str, field: str) -> list[tuple[bool, int]] | None:
    """An If-Match/If-None-Match value: None for ``*``, else [(weak, version), ...]."""
    text = header.strip()
    if text == "*":
        return None
    tags: list[tuple[bool, int]] = []
    for part in text.split(","):
        m = _ETAG_RE.match(part.strip())
        if m is None:
            raise bad_request(field, f'expected "*" or entity tags like "3", not {header[:60]!r}')
        tags.append((m.group(1) is not None, int(m.group(2))))
    return tags


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header, validated; None when absent."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_RE.match(key):
        raise bad_request("Idempotency-Key", "must be 1-255 visible ASCII characters")
    return key


def correlation_id(request: web.BaseRequest) -> str | None:
    """The client's X-Correlation-Id when it is safe to echo and log, else None."""
    value = request.headers.get("X-Correlation-Id")
    if value and CORRELATION_RE.match(value):
        return value
    return None
