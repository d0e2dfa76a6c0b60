"""The asyncio client: ``Client``'s operations as coroutines (see ``confman.client.sync``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Literal

import httpx

from confman.client.core import ClientCore, Consistency
from confman.client.models import AuditEvent, ChangePage, Entry, Namespace, NodeStatus, WatchEvent
from confman.client.plan import Plan, Sleep, T
from confman.client.sse import SSEParser
from confman.client.tls import PathLike, ssl_context
from confman.client.watching import WatchState


class AsyncClient:
    """Like ``Client``, on ``httpx.AsyncClient``: ``await client.get(...)``,
    ``async for event in client.watch(...)``."""

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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(
            headers=self._core.headers(),
            timeout=httpx.Timeout(timeout, connect=2.0),
            transport=transport,
            verify=ssl_context(cacert, cert, key),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def endpoints(self) -> list[str]:
        return list(self._core.endpoints.urls)

    async def _run(self, plan: Plan[T]) -> T:
        try:
            step = plan.send(None)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = plan.send(None)
                    continue
                reply: httpx.Response | httpx.TransportError
                try:
                    options = step.options(self._core.auth(step.url))
                    reply = await self._http.request(step.method, step.url, **options)
                except httpx.TransportError as exc:
                    reply = exc
                step = plan.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result

    async def leader(self) -> str | None:
        return await self._run(self._core.leader())

    async def cluster_status(self) -> list[NodeStatus]:
        return await self._run(self._core.cluster_status())

    async def namespaces(self, *, consistency: Consistency | None = None) -> list[Namespace]:
        return await self._run(self._core.namespaces(consistency))

    async def namespace(
        self, namespace: str, *, consistency: Consistency | None = None
    ) -> Namespace:
        return await self._run(self._core.namespace(namespace, consistency))

    async def put_namespace(
        self,
        namespace: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
    ) -> Namespace:
        plan = self._core.put_namespace(namespace, description, owner, idempotency_key)
        return await self._run(plan)

    async def delete_namespace(
        self, namespace: str, *, idempotency_key: str | None = None
    ) -> int | None:
        return await self._run(self._core.delete_namespace(namespace, idempotency_key))

    async def audit(
        self, namespace: str, *, limit: int = 50, consistency: Consistency | None = None
    ) -> list[AuditEvent]:
        return await self._run(self._core.audit(namespace, limit, consistency))

    async def get(
        self,
        namespace: str,
        key: str,
        *,
        consistency: Consistency | None = None,
        min_index: int | None = None,
    ) -> Entry:
        return await self._run(self._core.get(namespace, key, consistency, min_index))

    async def entries(
        self,
        namespace: str | None = None,
        *,
        consistency: Consistency | None = None,
        min_index: int | None = None,
    ) -> list[Entry]:
        return await self._run(self._core.entries(namespace, consistency, min_index))

    async def put(
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
        plan = self._core.put(namespace, key, value, type, if_match, create_only, idempotency_key)
        return await self._run(plan)

    async def delete(
        self,
        namespace: str,
        key: str,
        *,
        if_match: int | Literal["*"] | None = None,
        idempotency_key: str | None = None,
    ) -> int | None:
        return await self._run(self._core.delete(namespace, key, if_match, idempotency_key))

    async def poll(
        self,
        namespace: str | None = None,
        *,
        key: str | None = None,
        prefix: str | None = None,
        since: int | None = None,
        wait: float | None = None,
    ) -> ChangePage:
        return await self._run(self._core.poll(namespace, key, prefix, since, wait))

    def watch(
        self,
        namespace: str | None = None,
        *,
        key: str | None = None,
        prefix: str | None = None,
        since: int | None = None,
        heartbeat: float = 5.0,
        give_up_after: float | None = None,
    ) -> AsyncWatch:
        state = WatchState(self._core, namespace, key, prefix, since, heartbeat, give_up_after)
        return AsyncWatch(self._http, state)


class AsyncWatch(AsyncIterator[WatchEvent]):
    """``Watch`` for asyncio: ``async for event in watch``; ``await watch.aclose()``."""

    def __init__(self, http: httpx.AsyncClient, state: WatchState) -> None:
        self._http = http
        self._state = state
        self._closed = False
        self._response: httpx.Response | None = None
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
        return self._state.connects

    async def __anext__(self) -> WatchEvent:
        return await self._events.__anext__()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self.disconnect()
        with contextlib.suppress(RuntimeError):  # iterated by another task: it stops by itself
            await self._events.aclose()

    async def disconnect(self) -> None:
        """Drop the current connection; the watch resumes by itself."""
        if self._response is not None:
            await self._response.aclose()

    async def _run(self) -> AsyncGenerator[WatchEvent, None]:
        state = self._state
        while not self._closed:
            attempt = state.attempt()
            try:
                async with self._http.stream(
                    "GET",
                    attempt.url,
                    params=attempt.params,
                    headers=attempt.headers,
                    timeout=attempt.timeout,
                ) as reply:
                    if reply.status_code != 200:
                        await reply.aread()
                    if not state.opened(reply):
                        raise _Retry(f"{attempt.url}: HTTP {reply.status_code}")
                    self._response = reply
                    parser = SSEParser()
                    async for line in reply.aiter_lines():
                        ev = parser.feed(line)
                        change = state.event(ev) if ev is not None else None
                        if change is not None:
                            yield change
                why = "the stream ended"
            except (httpx.HTTPError, httpx.StreamError, _Retry) as exc:
                why = f"{type(exc).__name__}: {exc}"
            finally:
                self._response = None
            if not self._closed:
                await asyncio.sleep(state.failed(why))


class _Retry(Exception):
    pass
