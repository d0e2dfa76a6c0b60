"""What the parts of the runtime share: the Ready loop's wake-up, the stopping flag and the
background tasks ``stop()`` cancels (`Control`), and small helpers for futures (a timed wait
that never cancels the future; setters that skip a future already done)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class Control:
    """The wake-up of the Ready loop, whether the node is stopping, and its tasks."""

    __slots__ = ("stopping", "tasks", "wake_event")

    def __init__(self) -> None:
        self.wake_event = asyncio.Event()
        self.stopping = False
        self.tasks: list[asyncio.Task[Any]] = []

    def wake(self) -> None:
        """Let the Ready loop look at the core again."""
        self.wake_event.set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a task that ``stop()`` cancels (finished ones are dropped)."""
        self.tasks = [t for t in self.tasks if not t.done()]
        self.tasks.append(asyncio.create_task(coro, name=name))


async def wait(fut: asyncio.Future[_T], timeout: float) -> _T:
    """``fut``'s result, or TimeoutError after ``timeout`` s; ``fut`` itself is never
    cancelled (like ``wait_for(shield(fut))``, with one future and one timer less)."""
    if not fut.done():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        handle = loop.call_later(timeout, wake)
        fut.add_done_callback(wake)
        try:
            await waiter
        finally:
            handle.cancel()
            fut.remove_done_callback(wake)
        if not fut.done():
            raise TimeoutError
    return fut.result()


def set_result(f: asyncio.Future[_T], value: _T) -> None:
    if not f.done():
        f.set_result(value)


def set_exc(f: asyncio.Future[Any], exc: BaseException) -> None:
    if not f.done():
        f.set_exception(exc)
