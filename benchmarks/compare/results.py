"""Pure result logic: wrk output parsing, merging, medians, ratios, the issue's bars, table.

Latencies are kept as sparse histograms (microseconds -> count). wrk records one value per
completed response at microsecond resolution, and its ``done()`` hook (lua/common.lua) prints
the whole histogram, so merging several wrk processes (one per node) is exact: add the
histograms, then take percentiles of the sum. Throughput of a merged run is the sum of each
process's successful requests divided by its own measured duration (they run concurrently for
the same ``-d``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MARKER = "@@COMPARE "
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass(slots=True)
class Run:
    """One measured run of one workload against one system (possibly merged from parts)."""

    ok: int  # 2xx answers
    rate: float  # 2xx answers per second
    errors: dict[str, int]  # "status 503" / "timeout" / "connect" ... -> count
    hist: dict[int, int]  # latency microseconds -> count (every completed response)
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def pct_ms(self, p: float) -> float:
        """Latency percentile in ms (nearest rank); NaN without samples."""
        return percentile_hist(self.hist, p) / 1000.0

    def summary(self) -> dict[str, Any]:
        """The figures reported for this run (no histogram)."""
        return {
            "ok": self.ok,
            "rps": round(self.rate, 1),
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "p50_ms": _r(self.pct_ms(50)),
            "p95_ms": _r(self.pct_ms(95)),
            "p99_ms": _r(self.pct_ms(99)),
            "max_ms": _r(self.pct_ms(100)),
            **self.extra,
        }


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def percentile_hist(hist: Mapping[int, int], p: float) -> float:
    """Nearest-rank percentile of a value -> count histogram (p in 0..100); NaN if empty."""
    total = sum(hist.values())
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= rank:
            return float(v)
    return float(max(hist))  # pragma: no cover - unreachable


def hist_of(values_us: Iterable[int]) -> dict[int, int]:
    """Histogram of latencies in microseconds."""
    return dict(Counter(int(v) for v in values_us))


def parse_wrk(stdout: str) -> Run:
    """The ``@@COMPARE`` line of one wrk process (lua/common.lua's ``done()``) as a Run."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise ValueError(f"no {MARKER.strip()} line in wrk output:\n{stdout[-2000:]}")
    d = json.loads(line[len(MARKER) :])
    seconds = d["duration_us"] / 1e6
    non2xx = {f"status {k}": int(v) for k, v in (d.get("non2xx") or {}).items() if int(v)}
    errors = dict(non2xx)
    for k in SOCKET_ERRORS:
        n = int(d["errors"].get(k, 0))
        if n:
            errors[k] = n
    ok = int(d["requests"]) - sum(non2xx.values())
    hist = {int(k): int(v) for k, v in (d.get("hist") or {}).items()}
    return Run(ok, ok / seconds if seconds > 0 else 0.0, errors, hist, seconds)


def merge(parts: Sequence[Run]) -> Run:
    """Runs that happened concurrently (one per node) as one: rates and errors add up,
    histograms add up exactly, duration is the longest."""
    if not parts:
        raise ValueError("nothing to merge")
    errors: Counter[str] = Counter()
    hist: Counter[int] = Counter()
    for p in parts:
        errors.update(p.errors)
        hist.update(p.hist)
    return Run(
        ok=sum(p.ok for p in parts),
        rate=sum(p.rate for p in parts),
        errors=dict(errors),
        hist=dict(hist),
        seconds=max(p.seconds for p in parts),
        extra={"parts": len(parts)},
    )


def split_connections(clients: int, nodes: int) -> list[int]:
    """Spread ``clients`` over ``nodes`` as evenly as possible, first nodes first (10/3 ->
    4,3,3; 1/3 -> 1,0,0)."""
    base, extra = divmod(clients, nodes)
    return [base + (1 if i < extra else 0) for i in range(nodes)]


def median_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median over repeats (raw run records) of req/s and of each latency percentile; errors
    summed over the repeats."""
    errors: Counter[str] = Counter()
    for r in records:
        errors.update(r.get("errors") or {})
    out: dict[str, Any] = {"runs": len(records)}
    for f in ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        vals = [r[f] for r in records if r.get(f) is not None]
        out[f] = round(statistics.median(vals), 3) if vals else None
    out["errors"] = dict(errors)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass(frozen=True, slots=True)
class Bar:
    """One of issue 8's bars: a figure of Confman compared with a threshold."""

    name: str
    text: str
    value: float | None
    threshold: float
    higher_is_better: bool
    extra_ok: bool = True  # a second condition (failover: also below etcd)

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        ok = self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold
        return ok and self.extra_ok

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def row_key(workload: str, clients: int) -> str:
    """Key of a (workload, clients) row in the medians dict."""
    return f"{workload}@{clients}"


def evaluate_bars(
    medians: Mapping[str, Mapping[str, Mapping[str, Any]]],
    failover: Mapping[str, Mapping[str, Any]] | None = None,
    memory: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Bar]:
    """The issue's bars from ``medians[row_key][system]`` (and failover/memory summaries)."""

    def get(row: str, system: str, field_: str) -> float | None:
        v = medians.get(row, {}).get(system, {}).get(field_)
        return None if v is None else float(v)

    def r(row: str, field_: str = "rps") -> float | None:
        return ratio(get(row, "confman", field_), get(row, "etcd", field_))

    bars = [
        Bar("write-64", "writes, 64 clients: Confman/etcd req/s >= 1.0",
            r(row_key("write", 64)), 1.0, True),
        Bar("read-local-64", "local reads, 64 clients: Confman/etcd serializable >= 2.0",
            r(row_key("read-local", 64)), 2.0, True),
        Bar("read-linearizable-64", "linearizable reads, 64 clients: Confman/etcd >= 1.0",
            r(row_key("read-linearizable", 64)), 1.0, True),
        Bar("write-1-p50", "single-client write p50: Confman/etcd <= 1.0",
            r(row_key("write", 1), "p50_ms"), 1.0, False),
    ]  # fmt: skip
    fo = failover or {}
    cf, ef = fo.get("confman", {}).get("p50_s"), fo.get("etcd", {}).get("p50_s")
    bars.append(
        Bar("failover-p50", "failover p50 <= 0.5 s and below etcd's", cf, 0.5, False,
            extra_ok=ef is None or (cf is not None and cf < ef))
    )  # fmt: skip
    mem = memory or {}
    cm, em = mem.get("confman", {}).get("max_kib"), mem.get("etcd", {}).get("max_kib")
    bars.append(
        Bar("rss-100k", "max RSS after loading the keys: Confman/etcd <= 1.0",
            ratio(cm, em), 1.0, False)
    )  # fmt: skip
    return bars


def storage_bars(medians: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Bar]:
    """Issue 16's write bars (storage): 64-client writes, single-client p50 and p99, and the
    open-loop write p50, each as a Confman/etcd ratio."""

    def r(row: str | None, field_: str) -> float | None:
        m = medians.get(row or "", {})
        c, e = m.get("confman", {}).get(field_), m.get("etcd", {}).get(field_)
        return ratio(None if c is None else float(c), None if e is None else float(e))

    open_row = next((k for k in medians if k.startswith("open-write@")), None)
    return [
        Bar("s-write-64", "writes, 64 clients: Confman/etcd req/s >= 0.9",
            r(row_key("write", 64), "rps"), 0.9, True),
        Bar("s-write-1-p50", "single-client write p50: Confman/etcd <= 1.5",
            r(row_key("write", 1), "p50_ms"), 1.5, False),
        Bar("s-write-1-p99", "single-client write p99: Confman/etcd <= 2.0",
            r(row_key("write", 1), "p99_ms"), 2.0, False),
        Bar("s-open-write-p50", "open-loop writes p50: Confman/etcd <= 1.5",
            r(open_row, "p50_ms"), 1.5, False),
    ]  # fmt: skip


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def table(
    rows: Sequence[tuple[str, int | str]],
    medians: Mapping[str, Mapping[str, Mapping[str, Any]]],
    bars: Sequence[Bar],
    storage: Sequence[Bar] = (),
) -> str:
    """The side-by-side text table, bar rows marked, then the bar lists (issue 8's, and
    issue 16's storage bars when given)."""
    bar_rows = {
        row_key("write", 64): "write-64",
        row_key("read-local", 64): "read-local-64",
        row_key("read-linearizable", 64): "read-linearizable-64",
        row_key("write", 1): "write-1-p50",
    }
    by_name = {b.name: b for b in bars}
    head = (
        f"{'workload':<20} {'clients':>7} | {'Confman req/s':>13} {'etcd req/s':>11} "
        f"{'ratio':>6} | {'Confman p50/p99 ms':>18} {'etcd p50/p99 ms':>16} | "
        f"{'errors C/e':>11} | bar"
    )
    lines = [head, "-" * len(head)]
    for workload, clients in rows:
        k = row_key(workload, int(clients)) if isinstance(clients, int) else f"{workload}@{clients}"
        m = medians.get(k, {})
        c, e = m.get("confman", {}), m.get("etcd", {})
        rr = ratio(c.get("rps"), e.get("rps"))
        lat = [f"{_f(s.get('p50_ms'), '{:.2f}')}/{_f(s.get('p99_ms'), '{:.1f}')}" for s in (c, e)]
        errs = f"{sum((c.get('errors') or {}).values())}/{sum((e.get('errors') or {}).values())}"
        bar = ""
        if k in bar_rows and bar_rows[k] in by_name:
            b = by_name[bar_rows[k]]
            bar = f"{b.text.split(': ', 1)[-1]} -> {_f(b.value, '{:.2f}')} {b.verdict}"
        lines.append(
            f"{workload:<20} {clients!s:>7} | {_f(c.get('rps')):>13} {_f(e.get('rps')):>11} "
            f"{_f(rr, '{:.2f}'):>6} | {lat[0]:>18} {lat[1]:>16} | {errs:>11} | {bar}"
        )
    lines.append("")
    lines.append("bars (issue 8):")
    for b in bars:
        lines.append(f"  {b.verdict:<4} {b.text}: {_f(b.value, '{:.3f}')}")
    if storage:
        lines.append("bars (issue 16, storage):")
        for b in storage:
            lines.append(f"  {b.verdict:<4} {b.text}: {_f(b.value, '{:.3f}')}")
    return "\n".join(lines)
