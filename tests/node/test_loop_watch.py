"""Event-loop stall watch: late wake-ups are measured and logged with the collector's
share; the node process freezes its start-up heap so full collections stay short."""

from __future__ import annotations

import gc
import itertools
import logging
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Histogram

from confman.node.loop_watch import GcTimer, LoopWatch


def _hist() -> Histogram:
    return Histogram("lag", "lag", buckets=(0.01, 0.1, 1.0), registry=CollectorRegistry())


def _count(h: Histogram) -> float:
    return next(s.value for s in h.collect()[0].samples if s.name == "lag_count")


def test_a_late_wake_up_is_a_logged_stall(caplog: pytest.LogCaptureFixture) -> None:
    h = _hist()
    w = LoopWatch("n1", period_s=0.01, warn_s=0.075, histogram=h)
    with caplog.at_level(logging.WARNING, logger="confman.node"):
        assert w.woke(100.0, 100.012) == pytest.approx(0.002)
        assert w.stalls == 0 and not caplog.records
        assert w.woke(101.0, 101.21) == pytest.approx(0.2)
    assert w.stalls == 1
    assert _count(h) == 2
    (rec,) = caplog.records
    assert "event loop stalled 200 ms" in rec.getMessage()


def test_stall_logs_are_rate_limited_but_all_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    w = LoopWatch("n1", period_s=0.01, warn_s=0.05, histogram=_hist())
    with caplog.at_level(logging.WARNING, logger="confman.node"):
        for t in (10.0, 10.3, 10.6, 11.5):
            w.woke(t - 0.1, t)
    assert w.stalls == 4
    assert len(caplog.records) == 2  # 10.0 and 11.5: at most one a second


def test_gc_timer_times_collections() -> None:
    t = GcTimer()
    t.install()
    try:
        junk = [[i] for i in range(20_000)]
        for a, b in itertools.pairwise(junk):
            a.append(b)  # containers the full collection has to walk
        gc.collect()
        longest, total, gen = t.take()
    finally:
        t.uninstall()
    assert longest > 0 and total >= longest and gen == 2
    assert t.take() == (0.0, 0.0, -1)  # taken: reset
    assert t not in gc.callbacks


def test_freezing_the_start_up_heap_empties_the_collected_generations() -> None:
    code = (
        "import gc, confman.node.runtime, confman.api.app\n"
        "from confman.node.loop_watch import freeze_startup_heap\n"
        "before = len(gc.get_objects())\n"
        "freeze_startup_heap()\n"
        "print(before, gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, frozen, after = map(int, out.stdout.split())
    assert frozen >= before // 2 and after < before // 10
