"""Typed exceptions: one class per kind of failure a caller may want to handle."""

from __future__ import annotations

from typing import Any


class ConfmanError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(ConfmanError):
    """No endpoint could be reached (or kept answering) within the retry budget.

    ``outcome_unknown`` is true for a write that may have been applied: the request was sent
    but no answer came back. (With an idempotency key, the default, the client retries such
    writes itself; this is raised only when the retry budget ran out.)
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class UntrustedEndpoint(ConfmanError):
    """A 307 or a leader hint pointed outside the configured endpoints and the members they
    advertise on the same scheme (or from https to http); nothing was sent there.

    ``url`` is where it pointed, ``host`` its ``host:port``.
    """

    def __init__(self, url: str, host: str, why: str) -> None:
        super().__init__(f"refusing to send the API key to {host} ({url}): {why}")
        self.url = url
        self.host = host


class ApiError(ConfmanError):
    """The cluster answered with an error (an RFC 7807 problem)."""

    def __init__(self, status: int, problem: dict[str, Any], headers: dict[str, str]) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers
        self.title = str(problem.get("title") or f"HTTP {status}")
        self.detail = str(problem.get("detail") or self.title)
        self.field: str | None = problem.get("field")
        self.correlation_id = headers.get("x-correlation-id") or problem.get("traceId")
        super().__init__(f"{status} {self.title}: {self.detail}")


class BadRequest(ApiError):
    """400/415: the request is malformed; ``field`` names what is wrong."""


class Unauthorized(ApiError):
    """401: no API key, or an unknown one."""


class Forbidden(ApiError):
    """403: the key lacks the role, or the namespace is outside its grants."""


class NotFound(ApiError):
    """404: the namespace or entry does not exist."""


class HistoryCompacted(ApiError):
    """410: the watch asked for changes older than the retained history; list the state
    again and watch from its index."""

    @property
    def compacted_index(self) -> int | None:
        raw = self.headers.get("x-confman-compacted-index")
        return int(raw) if raw and raw.isdigit() else None


class PreconditionFailed(ApiError):
    """412: If-Match/If-None-Match did not hold (another writer won the race)."""

    @property
    def current_version(self) -> int | None:
        """The entry's version now, when it exists."""
        tag = self.headers.get("etag", "").strip('W/"')
        return int(tag) if tag.isdigit() else None


class PayloadTooLarge(ApiError):
    """413: the body is over the node's limit."""


class IdempotencyKeyReused(ApiError):
    """422: the idempotency key was already used for a different request."""


class ServerError(ApiError):
    """500 or another unexpected status."""


class Unavailable(ApiError):
    """503 that outlasted the retry budget: no leader, no quorum, replication timed out."""


class TimedOut(ApiError):
    """504: a linearizable/lease read or ``min_index`` wait was not satisfied in time."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: HistoryCompacted,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: BadRequest,
    422: IdempotencyKeyReused,
    503: Unavailable,
    504: TimedOut,
}


def error_for(status: int, problem: dict[str, Any], headers: dict[str, str]) -> ApiError:
    """The typed error for an error answer."""
    return _BY_STATUS.get(status, ServerError)(status, problem, headers)
