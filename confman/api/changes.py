"""Wake-ups for watchers: one shared signal, set whenever the node's applied index moves."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from confman.api.node_runtime import NodeRuntime

#: How often the hub checks the applied index by itself (a snapshot install applies state
#: without ``on_applied`` callbacks).
POLL_S = 0.5


class ChangeHub:
    """Lets any number of watchers wait for "something was applied after index N".

    Subscribes to ``rt.on_applied`` while started; ``close()`` wakes every watcher for good
    (the server is shutting down).
    """

    def __init__(self, rt: NodeRuntime) -> None:
        self._rt = rt
        self._signal = asyncio.Event()
        self._closed = False
        self._seen = -1
        self._poller: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self._rt.on_applied.append(self._on_applied)
        self._poller = asyncio.create_task(self._poll(), name="confman-watch-poll")

    async def close(self) -> None:
        """Wake every watcher and stop listening."""
        self._closed = True
        self._notify()
        with contextlib.suppress(ValueError):
            self._rt.on_applied.remove(self._on_applied)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    def _on_applied(self, entries: list[Any], results: list[Any]) -> None:
        self._notify()

    def _notify(self) -> None:
        self._seen = self._rt.applied_index
        signal, self._signal = self._signal, asyncio.Event()
        signal.set()

    async def _poll(self) -> None:
        while not self._closed:
            await asyncio.sleep(POLL_S)
            if self._rt.applied_index != self._seen:
                self._notify()

    async def wait_beyond(self, index: int, timeout: float) -> bool:
        """Wait until the applied index passes ``index``; False on timeout or close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._rt.applied_index <= index:
            if self._closed:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), remaining)
        return not self._closed
