"""The synchronous client."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Literal

import httpx

from confman.client.core import ClientCore, Consistency
from confman.client.models import AuditEvent, ChangePage, Entry, Namespace, NodeStatus, WatchEvent
from confman.client.plan import Plan, Sleep, T
from confman.client.sse import SSEParser
from confman.client.tls import PathLike, ssl_context
from confman.client.watching import WatchState


class Client:
    """A Confman cluster, by several endpoints (``"http://a:6100,http://b:6200"``).

    Writes go to the leader (found through ``/health/ready``, or by following 307) and
    carry an idempotency key, so 503s, timeouts and failovers are retried with backoff and
    jitter without applying a write twice. Reads go to one endpoint and move on when it
    fails; with ``session_reads`` (default) they wait until that node has applied
    everything this client wrote or read before (``minIndex``), so a client always sees its
    own writes and never goes back in time. The API key defaults to ``$CONFMAN_API_KEY``
    and goes only to the endpoints and the members they advertise, on their scheme (a
    redirect elsewhere raises ``UntrustedEndpoint``). ``cacert`` is the CA to trust for
    https endpoints, ``cert``/``key`` a client certificate (mTLS). Errors are
    ``confman.client`` exceptions.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 15.0,
        retry_timeout: float = 30.0,
        idempotent_writes: bool = True,
        forward_writes: bool = False,
        session_reads: bool = True,
        transport: httpx.BaseTransport | None = None,
        cacert: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
    ) -> None:
        self._core = ClientCore(
            endpoints,
            api_key,
            retry_timeout=retry_timeout,
            idempotent_writes=idempotent_writes,
            forward_writes=forward_writes,
            session_reads=session_reads,
        )
        self._http = httpx.Client(
            headers=self._core.headers(),
            timeout=httpx.Timeout(timeout, connect=2.0),
            transport=transport,
            verify=ssl_context(cacert, cert, key),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoints(self) -> list[str]:
        return list(self._core.endpoints.urls)

    def _run(self, plan: Plan[T]) -> T:
        try:
            step = plan.send(None)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = plan.send(None)
                    continue
                reply: httpx.Response | httpx.TransportError
                try:
                    reply = self._http.request(
                        step.method, step.url, **step.options(self._core.auth(step.url))
                    )
                except httpx.TransportError as exc:
                    reply = exc
                step = plan.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result

    # -- cluster ------------------------------------------------------------------------
    def leader(self) -> str | None:
        """The leader's URL as the endpoints report it now, or None."""
        return self._run(self._core.leader())

    def cluster_status(self) -> list[NodeStatus]:
        """Every endpoint's readiness, role, term and indexes (unreachable ones too)."""
        return self._run(self._core.cluster_status())

    # -- namespaces ---------------------------------------------------------------------
    def namespaces(self, *, consistency: Consistency | None = None) -> list[Namespace]:
        return self._run(self._core.namespaces(consistency))

    def namespace(self, namespace: str, *, consistency: Consistency | None = None) -> Namespace:
        return self._run(self._core.namespace(namespace, consistency))

    def put_namespace(
        self,
        namespace: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> Namespace:
        """Create the namespace, or replace its description and owner."""
        return self._run(self._core.put_namespace(namespace, description, owner, idempotency_key))

    def delete_namespace(self, namespace: str, *, idempotency_key: str | None = None) -> int | None:
        """Delete the namespace and its entries; the log index of the deletion (None if the
        answer carried no ``X-Confman-Index``)."""
        return self._run(self._core.delete_namespace(namespace, idempotency_key))

    def audit(
        self, namespace: str, *, limit: int = 50, consistency: Consistency | None = None
    ) -> list[AuditEvent]:
        """The namespace's audit events, newest first."""
        return self._run(self._core.audit(namespace, limit, consistency))

    # -- entries ------------------------------------------------------------------------
    def get(
        self,
        namespace: str,
        key: str,
        *,
        consistency: Consistency | None = None,
        min_index: int | None = None,
    ) -> Entry:
        """One entry. ``consistency="linearizable"`` never returns stale data;
        ``min_index`` (e.g. a write's ``index``) reads one's own writes on any node."""
        return self._run(self._core.get(namespace, key, consistency, min_index))

    def entries(
        self,
        namespace: str | None = None,
        *,
        consistency: Consistency | None = None,
        min_index: int | None = None,
    ) -> list[Entry]:
        """The entries of a namespace (sorted by key), or of every visible namespace."""
        return self._run(self._core.entries(namespace, consistency, min_index))

    def put(
        self,
        namespace: str,
        key: str,
        value: str,
        *,
        type: str | None = None,
        if_match: int | Literal["*"] | None = None,
        create_only: bool = False,
        idempotency_key: str | None = None,
    ) -> Entry:
        """Create or update an entry; ``if_match`` (a version, or ``"*"``) makes it a
        compare-and-set, ``create_only`` fails if it exists (both: PreconditionFailed)."""
        return self._run(
            self._core.put(namespace, key, value, type, if_match, create_only, idempotency_key)
        )

    def delete(
        self,
        namespace: str,
        key: str,
        *,
        if_match: int | Literal["*"] | None = None,
        idempotency_key: str | None = None,
    ) -> int | None:
        """Delete an entry; the log index of the deletion (None if the answer carried no
        ``X-Confman-Index``)."""
        return self._run(self._core.delete(namespace, key, if_match, idempotency_key))

    # -- changes ------------------------------------------------------------------------
    def poll(
        self,
        namespace: str | None = None,
        *,
        key: str | None = None,
        prefix: str | None = None,
        since: int | None = None,
        wait: float | None = None,
    ) -> ChangePage:
        """One long poll: the changes after ``since``, waiting up to ``wait`` seconds for one."""
        return self._run(self._core.poll(namespace, key, prefix, since, wait))

    def watch(
        self,
        namespace: str | None = None,
        *,
        key: str | None = None,
        prefix: str | None = None,
        since: int | None = None,
        heartbeat: float = 5.0,
        give_up_after: float | None = None,
    ) -> Watch:
        """An iterator of the changes after ``since`` (default: from now), resuming on any
        endpoint after disconnects and failovers; see ``Watch``."""
        state = WatchState(self._core, namespace, key, prefix, since, heartbeat, give_up_after)
        return Watch(self._http, state)


class Watch(Iterator[WatchEvent]):
    """Changes as they are committed, each exactly once and in log order, across
    reconnections. ``cursor`` is the log index every change up to which was delivered.
    Raises ``HistoryCompacted`` when it falls behind the retained history."""

    def __init__(self, http: httpx.Client, state: WatchState) -> None:
        self._http = http
        self._state = state
        self._closed = False
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()
        self._events = self._run()

    @property
    def cursor(self) -> int | None:
        return self._state.cursor

    @property
    def endpoint(self) -> str:
        """The node the watch is (or was last) connected to."""
        return self._state.endpoint

    @property
    def connects(self) -> int:
        """Connections made so far (1 + reconnections)."""
        return self._state.connects

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (from any thread)."""
        self._closed = True
        self.disconnect()
        with contextlib.suppress(ValueError):  # running in another thread: it stops by itself
            self._events.close()

    def disconnect(self) -> None:
        """Drop the current connection (from any thread); the watch resumes by itself."""
        with self._lock:
            reply = self._response
        if reply is None:
            return
        stream = reply.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
        else:
            reply.close()

    def _run(self) -> Generator[WatchEvent, None, None]:
        state = self._state
        while not self._closed:
            attempt = state.attempt()
            try:
                with self._http.stream(
                    "GET",
                    attempt.url,
                    params=attempt.params,
                    headers=attempt.headers,
                    timeout=attempt.timeout,
                ) as reply:
                    if reply.status_code != 200:
                        reply.read()
                    if not state.opened(reply):
                        raise _Retry(f"{attempt.url}: HTTP {reply.status_code}")
                    with self._lock:
                        self._response = reply
                    parser = SSEParser()
                    for line in reply.iter_lines():
                        ev = parser.feed(line)
                        change = state.event(ev) if ev is not None else None
                        if change is not None:
                            yield change
                why = "the stream ended"
            except (httpx.HTTPError, httpx.StreamError, _Retry) as exc:
                why = f"{type(exc).__name__}: {exc}"
            finally:
                with self._lock:
                    self._response = None
            if not self._closed:
                time.sleep(state.failed(why))


class _Retry(Exception):
    pass
