"""The clock: the Raft core's ticks from the monotonic clock. After a stall the missed ticks
are caught up a few at a time, with the loop reading its input in between."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from confman.node.loop_watch import LoopWatch
from confman.node.runtime_common import Control
from confman.raft.node import RawNode

#: Ticks run per loop iteration while catching up. Small enough that a node reads the
#: messages that arrived during a stall before its timers judge its peers silent (well
#: under election_tick_min - heartbeat_tick = 8); large enough that a saturated loop
#: (iterations of 30-50 ms under 256 clients) keeps pace with the clock, so a busy
#: leader still heartbeats on time. At 2 a leader's heartbeats slowed to 150+ ms there
#: and its followers started elections.
CATCH_UP_TICKS_PER_STEP = 5


class Clock:
    """Ticks ``core`` once per ``tick_s`` of monotonic time; ``on_ticks`` runs after ticks
    (it sends the heartbeats they produced and wakes the Ready loop)."""

    def __init__(
        self,
        core: RawNode,
        tick_s: float,
        on_ticks: Callable[[], None],
        watch: LoopWatch | None = None,
    ) -> None:
        self._core = core
        self._watch = watch
        self._tick_s = tick_s
        self._on_ticks = on_ticks
        self._last = time.monotonic()

    def pending_ticks(self) -> int:
        """Ticks that elapsed and have not been run yet."""
        return int((time.monotonic() - self._last) / self._tick_s)

    def advance(self, limit: int | None = None) -> int:
        """Run (up to ``limit`` of) the ticks that elapsed on the monotonic clock; returns
        how many are still due."""
        n = self.pending_ticks()
        if n <= 0:
            return 0
        k = n if limit is None else min(n, limit)
        self._last += k * self._tick_s
        for _ in range(k):
            self._core.tick()
        self._on_ticks()
        return n - k

    async def run(self, ctl: Control) -> None:
        """Tick by the monotonic clock. After a stall (GC, CPU starvation, SIGSTOP) the
        missed ticks are caught up a few at a time, letting the loop read the messages that
        arrived meanwhile in between, so a node that was merely slow does not mistake its
        own stall for silence of its peers (no needless step-down or election)."""
        watch = self._watch
        if watch is not None:
            watch.start()
        try:
            while not ctl.stopping:
                slept_from = time.monotonic()
                await asyncio.sleep(self._tick_s)
                if watch is not None:
                    watch.woke(slept_from, time.monotonic())
                while self.advance(limit=CATCH_UP_TICKS_PER_STEP) > 0:
                    await asyncio.sleep(0)
        finally:
            if watch is not None:
                watch.stop()
