"""Structured logs: one JSON object per line (or readable text), with the correlation id.

The access log is the logger ``confman.api.access``; each record carries its fields in
``record.fields``. ``configure_logging`` installs the formatter for the whole process (the
CLI calls it), so runtime logs share the format.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import IO, Any

import orjson

#: The correlation id of the request being handled by the current task.
CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "confman_correlation_id", default=None
)

access_log = logging.getLogger("confman.api.access")
error_log = logging.getLogger("confman.api")
#: Requests refused below the application (unparsable heads): debug level, reason only.
malformed_log = logging.getLogger("confman.api.malformed")
#: Where a parser message starts quoting input: ``b'...'``, ``bytearray(b'...')``, ``"..."``.
_QUOTED = re.compile(r"\s*(?:bytearray\()?b?['\"`]")


def malformed_reason(message: str | None) -> str:
    """What was wrong with a refused request, without the bytes the parser quoted.

    aiohttp's parser messages quote the offending line (``Invalid header value char:`` and
    then ``b'X-Api-Key: ...'``), which can hold a secret: only the first line is kept, up to
    any quote, and only when it is printable ASCII.
    """
    first = (message or "").strip().split("\n", 1)[0]
    reason = _QUOTED.split(first, 1)[0].rstrip(": ")[:120]
    if not reason or not reason.isascii() or not reason.isprintable():
        return "Malformed HTTP request"
    return reason


def log_malformed(status: int, reason: str, remote: str | None) -> None:
    """One debug record for a request refused before routing (no bytes, no traceback)."""
    if malformed_log.isEnabledFor(logging.DEBUG):
        malformed_log.debug(
            "malformed HTTP request from %s refused with %d: %s",
            remote,
            status,
            reason,
            extra={"fields": {"status": status, "reason": reason, "remote": remote}},
        )


def _timestamp(created: float) -> str:
    t = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created % 1 * 1e6):06d}Z"


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
    cid = fields.get("correlationId") or CORRELATION_ID.get()
    if cid is not None:
        fields["correlationId"] = cid
    return fields


class JsonFormatter(logging.Formatter):
    """``{"ts","level","logger","msg",...fields,"exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_record_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger msg key=value ...`` for people (dev profile)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created),
            record.levelname,
            record.name,
            record.getMessage(),
        ]
        parts += [f"{k}={v}" for k, v in _record_fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    level: str = "info", fmt: str = "json", stream: IO[str] | None = None
) -> None:
    """Send every log record of the process to ``stream`` (stderr) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
