"""Write forwarding: a follower proxies a write to the leader instead of answering 307.

Asked for per request (``?forward=true``) or for every write (``http.forward_writes``).
The follower has authenticated and checked the request already; the leader checks it
again (keys are cluster-wide). A forwarded request carries ``X-Confman-Forwarded-By`` and
is never forwarded again: a node that is no longer leader answers it with 307, which the
forwarder follows (a few hops at most).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from confman.api.problems import Problem, no_leader
from confman.api.validation import RAW_BODY, forward_param, read_body

FORWARDED_BY = "X-Confman-Forwarded-By"
WRITE_METHODS = frozenset({"PUT", "DELETE", "POST", "PATCH"})
_REQUEST_HEADERS = (
    "X-Api-Key",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
    "Accept",
)
_RESPONSE_HEADERS = (
    "Content-Type",
    "ETag",
    "Location",
    "Retry-After",
    "X-Confman-Index",
    "X-Confman-Replayed-From",
    "X-Confman-Leader",
)
MAX_HOPS = 3
_RETRY = {"Retry-After": "1"}


def wanted(request: web.Request, forward_writes: bool) -> bool:
    """Whether this write, redirected to the leader, should be forwarded instead
    (``forward_writes``: the node's setting, for a request that does not say)."""
    if request.method not in WRITE_METHODS or FORWARDED_BY in request.headers:
        return False
    asked = forward_param(request)
    return forward_writes if asked is None else asked


class Forwarder:
    """Sends writes on to the leader over one pooled HTTP client session."""

    def __init__(self, node_id: str, timeout_s: float) -> None:
        self._node_id = node_id
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=2.0)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=True)
        return self._session

    async def forward(
        self, request: web.Request, max_body: int, location: str, cid: str
    ) -> web.Response:
        """The leader's answer to ``request``, sent to ``location``; 503 if there is none.

        ``max_body``: the most bytes of body read, when no handler has read it yet."""
        body = request.get(RAW_BODY)
        if body is None:
            body = await read_body(request, max_body)
        headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
        headers |= {
            FORWARDED_BY: self._node_id,
            "X-Correlation-Id": cid,
            "X-Forwarded-For": request.remote or "",
        }
        url = location
        for _ in range(MAX_HOPS):
            try:
                async with self._client().request(
                    request.method, url, data=body, headers=headers, allow_redirects=False
                ) as answer:
                    payload = await answer.read()
                    if answer.status == 307 and "Location" in answer.headers:
                        url = answer.headers["Location"]  # the leader moved: one more hop
                        continue
                    kept = {h: answer.headers[h] for h in _RESPONSE_HEADERS if h in answer.headers}
                    return web.Response(status=answer.status, body=payload, headers=kept)
            except aiohttp.ClientConnectorError as exc:
                raise Problem(
                    503,
                    "Leader unreachable",
                    f"Could not connect to the leader at {url}: {exc.os_error}; the write was "
                    "not applied",
                    slug="leader-unreachable",
                    headers=_RETRY,
                ) from None
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise Problem(
                    503,
                    "Forwarding failed",
                    f"The leader at {url} did not answer ({type(exc).__name__}); the write may "
                    "have been applied: retry with the same Idempotency-Key to be safe",
                    slug="forward-failed",
                    headers=_RETRY,
                ) from None
        raise no_leader("The leader kept moving while the write was forwarded")


__all__ = ["FORWARDED_BY", "WRITE_METHODS", "Forwarder", "wanted"]
