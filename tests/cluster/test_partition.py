"""docs/behaviour.md §11: a leader cut off from the majority steps down; its writes never take
effect."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from confman.verify.cluster import ProcessCluster
from confman.verify.proxy import Mode
from tests.cluster.util import (
    TOLERANCE_S,
    boot,
    cluster_info,
    election_hi_s,
    entries,
    get_config,
    put_config,
    seed,
    wait_converged,
)


@pytest.mark.parametrize(
    ("heal", "mode"),
    [
        ("after_the_write_timed_out", "drop"),
        ("while_the_write_waits", "drop"),
        ("while_the_write_waits", "reset"),
    ],
)
def test_isolated_leader_steps_down_and_its_write_is_never_acknowledged(
    make_cluster: Callable[..., ProcessCluster], heal: str, mode: Mode
) -> None:
    """The write reaches the old leader, which appends it but cannot commit it. Either its
    replication timeout answers first (the entry is still in the old leader's log when the
    partition heals), or the heal does: the new leader's log replaces the entry. The cut
    is a black hole (``drop``) or refused connections (``reset``)."""
    pending = heal == "while_the_write_waits"
    # Longer election timeouts: the write must reach the old leader before it steps down
    # (at least half the lower timeout after the cut), even on a loaded machine.
    c = make_cluster(
        3,
        election_timeout_ms=(400, 800),
        replication_timeout_ms=10_000 if pending else 2_000,
    )
    old = boot(c)
    seed(c, "part", {"before": "1"})
    term0 = cluster_info(c, old)["term"]
    majority = [n for n in c.ids if n != old]

    outcome: list[object] = []

    def stale_write() -> None:
        try:
            r = c.request(
                old,
                "PUT",
                "api/v1/namespaces/part/config/stale",
                json={"value": "never"},
                timeout=15,
            )
            outcome.append(r)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    t0 = time.monotonic()
    c.isolate(old, mode)
    writer = threading.Thread(target=stale_write, daemon=True)
    writer.start()  # reaches the old leader while it still believes it leads

    def stepped_down() -> bool:
        return cluster_info(c, old)["role"] != "leader"

    c.wait_for(stepped_down, 5, 0.01, f"{old} to step down")
    took = time.monotonic() - t0
    assert took <= election_hi_s(c) + TOLERANCE_S, f"old leader stepped down after {took:.3f}s"
    info = cluster_info(c, old)
    assert info["httpStatus"] == 503 and info["status"] == "not_ready", info

    new = c.wait_leader(majority, timeout=10, min_term=term0 + 1)
    put_config(c, "part", "during", "2", nodes=majority)

    for n in c.ids:
        assert get_config(c, n, "part", "stale").status_code == 404, n
    # The partition was real: the old leader's heartbeats were swallowed or refused.
    cut = [c.links[(old, n)].stats for n in majority]
    assert all((s.bytes_dropped if mode == "drop" else s.reset) > 0 for s in cut)

    if pending:
        assert writer.is_alive(), f"the stale write was answered early: {outcome}"
        t_heal = time.monotonic()
        c.heal()
    writer.join(timeout=20)
    assert not writer.is_alive(), "the write to the isolated leader never returned"
    r = outcome[0]
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 503, f"the isolated leader answered a write: {r.status_code} {r.text}"
    title = r.json()["title"]
    if pending:  # the replaced entry fails its caller at once, not at the timeout
        assert title == "Write not committed" and time.monotonic() - t_heal < 5, r.text
    else:
        assert title == "Replication timed out", r.text
        c.heal()
    c.wait_ready()
    state = wait_converged(c)
    assert entries(state, "part") == {"before": "1", "during": "2"}
    assert all(e["key"] != "stale" for e in state["audit"]["part"])
    infos = {n: cluster_info(c, n) for n in c.ids}
    assert infos[old]["role"] == "follower" and infos[old]["term"] >= infos[new]["term"] > term0
    assert len({i["term"] for i in infos.values()}) == 1, infos
    for n in c.ids:
        assert get_config(c, n, "part", "stale").status_code == 404, n
