"""Fault profiles: how often each kind of fault and client action happens in a run.

A run picks its profile from its seed (``profile_for``), so a plain sweep of seeds covers
every fault kind. The profiles named ``bug_*`` are mixes designed to expose one deliberately
broken variant of the core quickly (the variants live with the tests, ``tests/raft/broken.py``);
they are valid, safe schedules for a correct core.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from confman.sim.network import NetFaults


@dataclass(frozen=True, slots=True)
class Profile:
    """Rates are probabilities per tick unless said otherwise; lengths are in ticks."""

    name: str
    nodes: int = 3
    fault_ticks: int = 400  # faults happen in [0, fault_ticks); then the calm phase
    net: NetFaults = field(default_factory=NetFaults)
    election: tuple[int, int] = (15, 30)  # election_tick_min, election_tick_max
    heartbeat: int = 7
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_bytes: int = 1 << 20  # Config.max_size_per_msg: small values split appends
    max_inflight: int = 256  # Config.max_inflight_msgs
    # partitions
    partition: float = 0.0  # chance a partition starts (while none is active)
    partition_len: tuple[int, int] = (20, 150)
    # crashes
    crash: float = 0.0
    crash_leader: float = 0.5  # share of crashes aimed at the leader
    down_len: tuple[int, int] = (3, 80)
    crash_after_vote: float = 0.0  # chance to crash right after sending a granted vote
    kill_new_leader: float = 0.0  # chance a newly elected leader crashes soon after
    kill_delay: tuple[int, int] = (1, 6)
    #: chance a new leader crashes after persisting its first Ready, before sending it
    #: (its no-op entry survives on its disk only: the ingredient of Figure 8)
    unsent_leader: float = 0.0
    # process pauses (GC, SIGSTOP): no ticks, no deliveries; on resume the runtime either
    # catches up the missed ticks (correct) or its ticker has lost them
    pause: float = 0.0
    pause_len: tuple[int, int] = (5, 60)
    pause_catch_up: bool = True
    # clock drift: each node's clock runs at a fixed rate in [1 - drift, 1 + drift]
    drift: float = 0.0
    # a leader's Ready: messages go out first and its disk write lands this much later
    send_first: float = 0.0
    persist_delay: tuple[int, int] = (1, 3)
    crash_in_window: float = 0.0  # chance the leader crashes before that write lands
    # snapshots: every node snapshots after this many applied entries (0 = never)
    snapshot_every: int = 0
    snapshot_keep: int = 2  # entries kept in the log behind a snapshot
    # operations
    transfer: float = 0.0
    campaign: float = 0.0
    membership: float = 0.0
    # clients
    propose: float = 0.3
    batch: float = 0.1  # share of proposals that are batches of 2-8 entries
    read: float = 0.05
    lease: float = 0.05
    read_at_leader: float = 0.3  # share of ReadIndex requests sent to the leader


_LOSSY = NetFaults(drop=0.08, dup=0.05, delay_min=0, delay_max=3, slow=0.01, slow_max=25)
_JITTER = NetFaults(drop=0.01, dup=0.01, delay_min=0, delay_max=2)

#: The default rotation: every fault kind, on 3 and 5 nodes.
PROFILES: tuple[Profile, ...] = (
    Profile("calm", net=NetFaults(delay_max=1), fault_ticks=200, read=0.1, lease=0.1),
    Profile("lossy", net=_LOSSY, max_msg_bytes=100, max_inflight=4),
    Profile("partitions", net=_JITTER, partition=0.03),
    Profile("partitions5", nodes=5, net=_JITTER, partition=0.03),
    Profile("crashes", net=_JITTER, crash=0.02, send_first=0.5, crash_in_window=0.03),
    Profile("crashes5", nodes=5, net=_JITTER, crash=0.03, send_first=0.5, crash_in_window=0.03),
    Profile(
        "snapshots",
        net=replace(_LOSSY, snapshot_delay=20),
        crash=0.01,
        partition=0.02,
        snapshot_every=8,
        snapshot_keep=1,
        max_msg_bytes=60,
        max_inflight=2,
    ),
    Profile("membership", net=_JITTER, membership=0.03, crash=0.005, snapshot_every=20),
    Profile("membership5", nodes=5, net=_LOSSY, membership=0.03, partition=0.01, snapshot_every=15),
    Profile("transfers", net=_JITTER, transfer=0.02, campaign=0.01, crash=0.005),
    Profile("reads", net=_JITTER, partition=0.03, read=0.3, lease=0.3, propose=0.2, drift=0.1),
    Profile("pauses", net=_JITTER, pause=0.03, crash=0.005, read=0.2, lease=0.3, propose=0.4),
    Profile(
        "chaos",
        nodes=5,
        net=_LOSSY,
        partition=0.02,
        crash=0.01,
        send_first=0.5,
        crash_in_window=0.1,
        snapshot_every=12,
        transfer=0.005,
        campaign=0.005,
        membership=0.01,
        read=0.1,
        lease=0.1,
        pause=0.005,
        drift=0.05,
    ),
    # Targeted mixes (see module docstring); also part of the rotation.
    Profile(
        "bug_figure8",
        fault_ticks=600,
        net=NetFaults(drop=0.1, delay_max=2),
        pre_vote=False,
        check_quorum=False,
        election=(10, 14),
        heartbeat=3,
        crash=0.02,
        crash_leader=0.9,
        down_len=(1, 10),
        send_first=1.0,
        persist_delay=(1, 3),
        crash_in_window=0.3,
        unsent_leader=0.5,
        max_msg_bytes=1,
        max_inflight=1,
    ),
    Profile(
        "bug_vote_crash",
        nodes=5,
        net=NetFaults(delay_max=2),
        pre_vote=False,
        check_quorum=False,
        election=(15, 17),
        crash_after_vote=0.5,
        down_len=(1, 3),
        crash=0.02,
        crash_leader=1.0,
    ),
    Profile(
        "bug_stale_log",
        nodes=5,
        net=_JITTER,
        partition=0.04,
        partition_len=(40, 120),
        crash=0.02,
        crash_leader=1.0,
        down_len=(1, 20),
        propose=0.5,
        pre_vote=False,
    ),
    Profile(
        "bug_stale_read",
        net=NetFaults(delay_max=1),
        check_quorum=False,
        partition=0.05,
        partition_len=(40, 120),
        read=0.4,
        read_at_leader=0.8,
        lease=0.0,
        propose=0.5,
    ),
    Profile(
        "bug_reorder",
        net=NetFaults(dup=0.3, delay_max=4, slow=0.2, slow_max=30),
        propose=0.6,
        batch=0.5,
    ),
)

BY_NAME: dict[str, Profile] = {p.name: p for p in PROFILES}


def profile_for(seed: int, name: str | None = None) -> Profile:
    """The named profile, or the seed's place in the rotation."""
    if name is not None:
        return BY_NAME[name]
    return PROFILES[seed % len(PROFILES)]


def overridden(p: Profile, settings: tuple[str, ...]) -> Profile:
    """``p`` with ``key=value`` settings (``net.key=value`` for the network's faults).

    Values take the type of the field: ``crash=0``, ``pause_catch_up=false``,
    ``election=10,14``, ``net.drop=0.2``.
    """
    net = p.net
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {item!r}")
        if key.startswith("net."):
            name = key[4:]
            net_change: dict[str, Any] = {name: _parse(text, getattr(NetFaults(), name))}
            net = replace(net, **net_change)
        elif key in ("name", "net") or key not in Profile.__dataclass_fields__:
            raise ValueError(f"unknown profile setting {key!r}")
        else:
            changes[key] = _parse(text, getattr(p, key))
    return replace(p, net=net, **changes)


def _parse(text: str, like: object) -> object:
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(like, tuple):
        return tuple(int(x) for x in text.split(","))
    if isinstance(like, int):
        return int(text)
    return float(text)
