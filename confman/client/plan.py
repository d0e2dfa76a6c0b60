"""The request logic shared by the sync and async clients, written without I/O.

An operation is a generator ("plan") that yields ``Send`` (an HTTP request to make; the
driver sends back the ``httpx.Response`` or the ``httpx.TransportError``) and ``Sleep``
steps, and returns its result. ``exchange`` holds the policy: leader discovery through
``/health/ready``, following 307, and retries of 503/504/unreachable nodes with
exponential backoff and jitter until the retry budget is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from confman.client.errors import ConnectionFailed, error_for


@dataclass(frozen=True, slots=True)
class Send:
    """Make this request (no redirects followed); reply with the response or the error."""

    method: str
    url: str
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    timeout: float | None = None  # None: the client's default

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request`` for this step."""
        return {
            "params": self.params,
            "headers": self.headers,
            "json": self.json,
            "timeout": httpx.USE_CLIENT_DEFAULT if self.timeout is None else self.timeout,
            "follow_redirects": False,
        }


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Reply = httpx.Response | httpx.TransportError
Plan = Generator[Send | Sleep, Reply | None, Any]

#: Statuses worth another attempt (elsewhere or later).
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_REDIRECTS = 5
READY_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: half the cap plus a random half."""

    base: float = 0.05
    cap: float = 1.0
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(slots=True)
class Endpoints:
    """The configured node URLs, the one reads currently use, and the known leader."""

    urls: list[str]
    current: int = 0
    leader: str | None = None

    @classmethod
    def parse(cls, endpoints: str | Sequence[str]) -> Endpoints:
        items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        urls = [u.strip().rstrip("/") for u in items if u and u.strip()]
        if not urls:
            raise ValueError("at least one endpoint URL is needed")
        for u in urls:
            parts = urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {u!r}")
        return cls(urls)

    @property
    def read_url(self) -> str:
        return self.urls[self.current % len(self.urls)]

    def rotate(self) -> None:
        self.current = (self.current + 1) % len(self.urls)

    def failed(self, url: str) -> None:
        """``url`` did not answer: forget it as leader, move reads elsewhere."""
        if self.leader == url:
            self.leader = None
        if self.read_url == url:
            self.rotate()


def base_of(location: str, path: str) -> str:
    """The node URL of a redirect ``location`` that repeats ``path`` (and its query)."""
    cut = location.split("?", 1)[0]
    if cut.endswith(path):
        return cut[: len(cut) - len(path)].rstrip("/")
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}"


def discover_leader(endpoints: Endpoints) -> Plan:
    """Ask the endpoints' ``/health/ready`` who leads; the leader's URL or None."""
    named: str | None = None
    for url in endpoints.urls:
        reply = yield Send("GET", url + "/health/ready", timeout=READY_TIMEOUT_S)
        if isinstance(reply, httpx.TransportError):
            continue
        try:
            cluster = reply.json().get("cluster") or {}
        except ValueError:
            continue
        if cluster.get("role") == "leader" and reply.status_code == 200:
            return url
        if named is None and cluster.get("leader"):
            named = str(cluster["leader"]).rstrip("/")
    return named


@dataclass(frozen=True, slots=True)
class Call:
    """One API request and how to treat it."""

    method: str
    path: str  # starting with "/"
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    write: bool = False  # a change: an unanswered attempt may have been applied
    safe_to_resend: bool = True  # an ambiguous failure may be retried
    leader: bool = False  # send to the leader (writes, lease reads)
    timeout: float | None = None


def exchange(endpoints: Endpoints, call: Call, retry_timeout: float) -> Plan:
    """Send ``call`` until it gets an answer that is not worth retrying; that response.

    Writes and lease reads go to the known leader (discovered when unknown), other reads to
    the current endpoint.
    A 307 is followed at once; 502/503/504 and unreachable nodes are retried with backoff,
    on another endpoint for reads, until ``retry_timeout`` seconds have passed.
    """
    deadline = time.monotonic() + retry_timeout
    backoff = Backoff()
    redirects = 0
    target: str | None = None
    last_problem = "no attempt made"
    maybe_applied = False
    while True:
        if target is None:
            if call.leader:
                if endpoints.leader is None:
                    endpoints.leader = yield from discover_leader(endpoints)
                target = endpoints.leader or endpoints.read_url
            else:
                target = endpoints.read_url
        reply = yield Send(
            call.method,
            target + call.path,
            call.params,
            call.headers,
            call.json,
            call.timeout,
        )
        if isinstance(reply, httpx.TransportError):
            sent = not isinstance(reply, httpx.ConnectError | httpx.ConnectTimeout)
            last_problem = f"{target}: {type(reply).__name__}: {reply}"
            maybe_applied = maybe_applied or (sent and call.write)
            if sent and not call.safe_to_resend:
                raise ConnectionFailed(
                    f"{last_problem} (the request was sent; it may have been applied)",
                    outcome_unknown=True,
                )
            endpoints.failed(target)
        elif reply.status_code == 307 and "location" in reply.headers:
            redirects += 1
            if redirects > MAX_REDIRECTS:
                raise ConnectionFailed(f"more than {MAX_REDIRECTS} redirects for {call.path}")
            target = base_of(reply.headers["location"], call.path)
            if call.leader:
                endpoints.leader = target
            continue
        elif reply.status_code in RETRY_STATUSES:
            last_problem = f"{target}: {reply.status_code} {_title(reply)}"
            if call.leader:
                endpoints.leader = None
            else:
                endpoints.rotate()
        else:
            return reply
        if time.monotonic() >= deadline:
            if isinstance(reply, httpx.Response):
                raise raise_for(reply)
            raise ConnectionFailed(
                f"gave up after {retry_timeout:g}s: {last_problem}", outcome_unknown=maybe_applied
            )
        target = None
        yield Sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))


def _title(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("title", ""))
    except ValueError:
        return reply.reason_phrase


def raise_for(reply: httpx.Response) -> Exception:
    """The typed error for an error response."""
    try:
        problem = reply.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"title": reply.reason_phrase, "detail": reply.text[:300]}
    headers = {k.lower(): v for k, v in reply.headers.items()}
    return error_for(reply.status_code, problem, headers)
