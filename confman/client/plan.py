"""The request logic shared by the sync and async clients, written without I/O.

An operation is a generator ("plan") that yields ``Send`` (an HTTP request to make; the
driver sends back the ``httpx.Response`` or the ``httpx.TransportError``) and ``Sleep``
steps, and returns its result. ``exchange`` holds the policy: leader discovery through
``/health/ready``, following 307, and retries of 503/504/unreachable nodes with
exponential backoff and jitter until the retry budget is spent.

The API key goes only to the configured endpoints and the members they advertise
(``cluster.members`` of ``/health/ready``) on their own scheme: a 307 or a leader hint that
points anywhere else, or from https to http, raises ``UntrustedEndpoint`` (``Endpoints.vet``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urljoin, urlsplit

import httpx

from confman.client.errors import ConnectionFailed, UntrustedEndpoint, error_for


@dataclass(frozen=True, slots=True)
class Send:
    """Make this request (no redirects followed); reply with the response or the error."""

    method: str
    url: str
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    timeout: float | None = None  # None: the client's default

    def options(self, auth: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request`` for this step, with ``auth`` (the
        API key header, when ``url`` may have it) added to the headers."""
        return {
            "params": self.params,
            "headers": {**(self.headers or {}), **(auth or {})},
            "json": self.json,
            "timeout": httpx.USE_CLIENT_DEFAULT if self.timeout is None else self.timeout,
            "follow_redirects": False,
        }


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Reply = httpx.Response | httpx.TransportError
T = TypeVar("T")
#: An operation returning ``T``. The driver answers a ``Send`` with its ``Reply`` and a
#: ``Sleep`` (and the first step) with None.
Plan = Generator[Send | Sleep, Reply | None, T]

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
        ceiling: float = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return ceiling / 2 + random.uniform(0, ceiling / 2)


Origin = tuple[str, str, int]


def origin(url: str) -> Origin:
    """(scheme, host, port) of ``url``, the port defaulted by the scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return scheme, "", -1
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


@dataclass(slots=True)
class Endpoints:
    """The configured node URLs, the one reads currently use, the known leader, and the
    members the configured endpoints advertise (origin -> URL)."""

    urls: list[str]
    current: int = 0
    leader: str | None = None
    members: dict[Origin, str] = field(default_factory=dict)

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

    def configured(self, url: str) -> bool:
        return origin(url) in {origin(u) for u in self.urls}

    def trusted(self, url: str) -> bool:
        """True when the API key may go to ``url``."""
        return self.configured(url) or origin(url) in self.members

    def learn(self, advertiser: str, body: Any) -> None:
        """Trust the members a configured endpoint's ``/health/ready`` body lists
        (``cluster.members``: ``{"http": url}`` objects or URLs) on that endpoint's scheme."""
        if not self.configured(advertiser) or not isinstance(body, dict):
            return
        cluster = body.get("cluster")
        listed = cluster.get("members") if isinstance(cluster, dict) else None
        if not isinstance(listed, list):
            return
        scheme = origin(advertiser)[0]
        for m in listed:
            url = m.get("http") if isinstance(m, dict) else m
            if isinstance(url, str) and origin(url)[0] == scheme and origin(url)[1]:
                self.members[origin(url)] = url.rstrip("/")

    def vet(self, url: str, via: str) -> str:
        """``url`` (a redirect or leader hint that ``via`` gave) if the key may go there;
        otherwise ``UntrustedEndpoint`` naming its host."""
        host = urlsplit(url).netloc or url
        scheme = origin(url)[0]
        if scheme not in ("http", "https") or not origin(url)[1]:
            raise UntrustedEndpoint(url, host, "not an http(s) URL")
        if origin(via)[0] == "https" and scheme != "https":
            raise UntrustedEndpoint(url, host, f"a downgrade from https ({via}) to {scheme}")
        if not self.trusted(url):
            raise UntrustedEndpoint(
                url,
                host,
                "neither a configured endpoint nor a member the cluster advertises on the "
                "same scheme",
            )
        return url

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


def _ready(url: str) -> Plan[tuple[int, dict[str, Any]] | None]:
    """``url``'s ``/health/ready`` answer: (HTTP status, JSON object), or None."""
    step = Send("GET", url + "/health/ready", timeout=READY_TIMEOUT_S)
    reply = cast(Reply, (yield step))  # a Send is answered with its Reply
    if isinstance(reply, httpx.TransportError):
        return None
    try:
        body = reply.json()
    except ValueError:
        return None
    return (reply.status_code, body) if isinstance(body, dict) else None


def discover_leader(endpoints: Endpoints) -> Plan[str | None]:
    """Ask the endpoints' ``/health/ready`` who leads (learning the members they list); the
    leader's URL or None. A hint naming only untrusted hosts raises ``UntrustedEndpoint``."""
    hints: list[tuple[str, str]] = []  # (leader named, by whom)
    for url in endpoints.urls:
        answer = yield from _ready(url)
        if answer is None:
            continue
        status, body = answer
        endpoints.learn(url, body)
        cluster = body.get("cluster") or {}
        if not isinstance(cluster, dict):
            continue
        if cluster.get("role") == "leader" and status == 200:
            return url
        if cluster.get("leader"):
            hints.append((str(cluster["leader"]).rstrip("/"), url))
    refused: UntrustedEndpoint | None = None
    for hint, via in hints:
        try:
            return endpoints.vet(hint, via)
        except UntrustedEndpoint as exc:
            refused = refused or exc
    if refused is not None:
        raise refused
    return None


def learn_members(endpoints: Endpoints) -> Plan[None]:
    """Ask every configured endpoint which members it advertises."""
    for url in endpoints.urls:
        answer = yield from _ready(url)
        if answer is not None:
            endpoints.learn(url, answer[1])


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


def exchange(endpoints: Endpoints, call: Call, retry_timeout: float) -> Plan[httpx.Response]:
    """Send ``call`` until it gets an answer that is not worth retrying; that response.

    Writes and lease reads go to the known leader (discovered when unknown), other reads to
    the current endpoint.
    A 307 to a trusted URL (see ``Endpoints.vet``; the members are asked again once when it
    is not) is followed at once; 502/503/504 and unreachable nodes are retried with backoff,
    on another endpoint for reads, until ``retry_timeout`` seconds have passed.
    """
    deadline = time.monotonic() + retry_timeout
    backoff = Backoff()
    redirects = 0
    asked_members = False
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
        step = Send(
            call.method,
            target + call.path,
            call.params,
            call.headers,
            call.json,
            call.timeout,
        )
        reply = cast(Reply, (yield step))  # a Send is answered with its Reply
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
            location = urljoin(target + call.path, reply.headers["location"])
            named = base_of(location, call.path)
            if not endpoints.trusted(named) and not asked_members:
                asked_members = True
                yield from learn_members(endpoints)
            target = endpoints.vet(named, target)
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
