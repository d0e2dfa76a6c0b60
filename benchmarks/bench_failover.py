"""Failover and start-up time of a real 3-process cluster on loopback.

Run: ``.venv/bin/python -m benchmarks.bench_failover [--trials 20] [--startup-trials 5]``

- failover: from ``kill -9`` of the leader to the first acknowledged (2xx) write. A client
  sends writes to the surviving nodes in turn (following redirects, 1 s timeout per
  request, 10 ms pause after a failed attempt, which bounds the resolution); 5xx answers,
  refused connections and timeouts are failures, never successes. Between trials the killed
  node is restarted and the cluster waits until every node is ready and has applied the same
  index.
- start-up: from starting 3 fresh processes (new data directories) to every node reporting
  ``ready`` with one leader, including Python start-up of each process (shown apart: the
  time until all three answer ``GET /health``).

Percentiles are nearest-rank over the trials (with 20 trials p99 is the maximum).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field

import httpx

from confman.verify.cluster import ProcessCluster

NS = "bench"


@dataclass
class Trial:
    seconds: float
    attempts: int
    failures: dict[str, int] = field(default_factory=dict)
    old_term: int = 0
    new_term: int = 0


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def _term(c: ProcessCluster, nid: str) -> int:
    st = c.status(nid)
    return int(st["cluster"]["term"]) if st else 0


def wait_settled(c: ProcessCluster, timeout: float = 30.0) -> str:
    """Every node ready with one leader and the same applied index; the leader."""
    c.wait_ready(timeout=timeout)

    def same_index() -> bool:
        sts = c.statuses(c.ids)
        idx = {(s or {}).get("cluster", {}).get("appliedIndex") for s in sts.values()}
        return len(idx) == 1 and None not in idx

    c.wait_for(same_index, timeout, 0.05, "every node at the same applied index")
    leader = c.leader()
    assert leader is not None
    return leader


def write_once(http: httpx.Client, c: ProcessCluster, nid: str, key: str) -> str | None:
    """One write attempt; None on success, else a short failure label."""
    try:
        r = http.put(
            c.url(nid) + f"api/v1/namespaces/{NS}/config/{key}",
            json={"value": key},
            headers=c.auth("admin"),
            follow_redirects=True,
        )
    except httpx.TimeoutException:
        return "timeout"
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if 200 <= r.status_code < 300:
        return None
    title = ""
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        title = " " + str(r.json().get("title", ""))
    return f"{r.status_code}{title}"


def ensure_namespace(c: ProcessCluster, http: httpx.Client) -> None:
    def created() -> bool:
        r = http.put(
            c.url(c.leader() or c.ids[0]) + f"api/v1/namespaces/{NS}",
            json={},
            headers=c.auth("admin"),
            follow_redirects=True,
        )
        return 200 <= r.status_code < 300

    c.wait_for(created, 15, 0.05, f"namespace {NS} to be created")


def failover_trial(c: ProcessCluster, http: httpx.Client, n: int) -> Trial:
    leader = wait_settled(c)
    old_term = _term(c, leader)
    survivors = [x for x in c.ids if x != leader]
    failures: dict[str, int] = {}
    attempts = 0
    t_kill = time.monotonic()
    c.kill(leader)
    while True:
        nid = survivors[attempts % len(survivors)]
        attempts += 1
        err = write_once(http, c, nid, f"t{n}-{attempts}")
        if err is None:
            took = time.monotonic() - t_kill
            break
        failures[err] = failures.get(err, 0) + 1
        if time.monotonic() - t_kill > 60:
            raise RuntimeError(f"no acknowledged write within 60 s: {failures}\n{c.describe()}")
        time.sleep(0.01)
    new_leader = c.wait_leader(survivors, timeout=10)
    trial = Trial(took, attempts, failures, old_term, _term(c, new_leader))
    c.start(leader)
    return trial


def startup_trial(args: argparse.Namespace) -> tuple[float, float, float]:
    """Seconds to every process answering HTTP, to the first ready leader, to all ready."""
    with ProcessCluster(3, election_timeout_ms=args.election_timeout) as c:
        t0 = time.monotonic()
        c.start_all()
        c.wait_for(lambda: all(c.health(n, 0.5) for n in c.ids), 30, 0.02, "HTTP up")
        t_up = time.monotonic() - t0
        c.wait_leader(timeout=30)
        t_leader = time.monotonic() - t0
        c.wait_ready(timeout=30)
        return t_up, t_leader, time.monotonic() - t0


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<34} {len(ms):>6} {percentile(ms, 50):>8.0f} {percentile(ms, 99):>8.0f} "
        f"{max(ms):>8.0f} {statistics.fmean(ms):>8.0f} {min(ms):>8.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="failover trials (>= 20 advised)")
    ap.add_argument("--startup-trials", type=int, default=5)
    ap.add_argument(
        "--election-timeout",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(150, 300),
        help="low,high in ms (default 150,300)",
    )
    ap.add_argument("--verbose", action="store_true", help="print every trial")
    args = ap.parse_args()

    print(f"start-up: {args.startup_trials} fresh 3-node clusters ...", flush=True)
    startups = [startup_trial(args) for _ in range(args.startup_trials)]

    print(f"failover: {args.trials} trials ...", flush=True)
    trials: list[Trial] = []
    with (
        ProcessCluster(3, election_timeout_ms=args.election_timeout) as c,
        httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5)) as http,
    ):
        c.start_all()
        c.wait_leader(timeout=30)
        ensure_namespace(c, http)
        for n in range(args.trials):
            t = failover_trial(c, http, n)
            trials.append(t)
            if args.verbose:
                print(
                    f"  trial {n + 1:>3}: {t.seconds * 1000:7.0f} ms, {t.attempts} attempts, "
                    f"term {t.old_term} -> {t.new_term}, failures {t.failures}",
                    flush=True,
                )
        wait_settled(c)

    lo, hi = args.election_timeout
    print()
    print(f"3 nodes on loopback, election timeout {lo}-{hi} ms (times in ms)")
    print(f"{'measure':<34} {'trials':>6} {'p50':>8} {'p99':>8} {'max':>8} {'mean':>8} {'min':>8}")
    print("-" * 86)
    print(row("failover: kill -9 -> first write", [t.seconds for t in trials]))
    print(row("start-up: start -> all answer HTTP", [s[0] for s in startups]))
    print(row("start-up: start -> first leader", [s[1] for s in startups]))
    print(row("start-up: start -> all ready", [s[2] for s in startups]))
    failures: dict[str, int] = {}
    for t in trials:
        for k, v in t.failures.items():
            failures[k] = failures.get(k, 0) + v
    print(f"\nfailed write attempts during failovers: {failures or 'none'}")
    print(f"term increases: {sorted({t.new_term - t.old_term for t in trials})}")


if __name__ == "__main__":
    main()
