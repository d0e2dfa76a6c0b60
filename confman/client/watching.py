"""The resumable part of a watch, without I/O: where to (re)connect, and which events of
the stream are new.

The server names a complete log index with every ``id:`` (a namespace deletion's events
share one index and only the last carries the id). After a disconnect the watch resumes
from the last id; events of a partly received index come again and are skipped by count, so
the caller sees every change exactly once, in log order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import orjson

from confman.client.core import ClientCore, watch_params
from confman.client.errors import ConnectionFailed, HistoryCompacted
from confman.client.models import WatchEvent
from confman.client.plan import Backoff, raise_for
from confman.client.sse import ServerEvent

SSE_TYPE = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connection to make."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]
    timeout: httpx.Timeout


class WatchState:
    """Cursor, filter and reconnection policy of one watch."""

    def __init__(
        self,
        core: ClientCore,
        namespace: str | None,
        key: str | None,
        prefix: str | None,
        since: int | None,
        heartbeat: float,
        give_up_after: float | None,
    ) -> None:
        self._core = core
        self._filter = watch_params(namespace, key, prefix)
        self._heartbeat = heartbeat
        self._give_up_after = give_up_after
        self.cursor = since  # every change up to here was delivered
        self._group: int | None = None  # index of a partly delivered group of events
        self._delivered = 0
        self._skip = 0
        self._backoff = Backoff(cap=2.0)
        self._failing_since: float | None = None
        self._url = ""
        self.connects = 0

    @property
    def endpoint(self) -> str:
        """The endpoint of the current (or last) connection."""
        return self._url

    def attempt(self) -> Attempt:
        """The next connection: the current endpoint, resuming after the cursor."""
        self._url = self._core.endpoints.read_url
        params = dict(self._filter, heartbeat=f"{self._heartbeat:g}s")
        headers = {"Accept": SSE_TYPE, **self._core.auth(self._url)}
        if self.cursor is not None:
            params["since"] = str(self.cursor)
            headers["Last-Event-ID"] = str(self.cursor)
        self._skip = self._delivered if self._group is not None else 0
        read = self._heartbeat * 2 + 3  # silence beyond two heartbeats: a dead connection
        return Attempt(
            self._url + "/api/v1/watch",
            params,
            headers,
            httpx.Timeout(read, connect=2.0),
        )

    def opened(self, reply: httpx.Response) -> bool:
        """True when ``reply`` is the event stream; False to retry elsewhere. Raises the
        typed error of a final answer (410 HistoryCompacted, 401, 403, 400...)."""
        ctype = reply.headers.get("content-type", "")
        if reply.status_code == 200 and ctype.startswith(SSE_TYPE):
            self.connects += 1
            self._failing_since = None
            self._backoff.attempt = 0
            return True
        if reply.status_code in (502, 503, 504) or reply.status_code == 200:
            return False
        raise raise_for(reply)

    def failed(self, why: str) -> float:
        """The connection could not be made or broke; seconds to wait before the next."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif self._give_up_after is not None and now - self._failing_since > self._give_up_after:
            raise ConnectionFailed(f"watch gave up after {self._give_up_after:g}s: {why}")
        self._core.endpoints.failed(self._url)
        return self._backoff.next()

    def event(self, ev: ServerEvent) -> WatchEvent | None:
        """The change ``ev`` carries if it is new; progress updates the cursor."""
        if ev.event == "compacted":
            problem = orjson.loads(ev.data)
            raise HistoryCompacted(410, problem, {})
        if ev.event == "progress":
            if ev.id is not None and ev.id.isdigit():
                self.cursor = int(ev.id)
                self._group, self._delivered = None, 0
            return None
        if ev.event != "message":
            return None
        change = WatchEvent.from_json(orjson.loads(ev.data))
        if self._skip and change.index == self._group:
            self._skip -= 1  # delivered before the reconnect
            return None
        self._skip = 0
        if change.index != self._group:
            self._group, self._delivered = change.index, 0
        self._delivered += 1
        if ev.id is not None:  # the last event of its index
            self.cursor = change.index
            self._group, self._delivered = None, 0
        return change
