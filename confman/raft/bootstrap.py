"""Bootstrapping a brand-new cluster: its initial membership as the first log entries.

Every founding member writes the same entries (term 1, committed), one membership change
per member, as etcd does. The log then holds the whole membership history, so a member
added later learns the founders by replaying the log from index 1.
"""

from __future__ import annotations

from collections.abc import Iterable

from confman.raft.confchange import encode_conf_change
from confman.raft.types import ConfChange, ConfChangeType, Entry, EntryType, HardState, NodeId


def bootstrap_entries(
    voters: Iterable[NodeId], learners: Iterable[NodeId] = ()
) -> tuple[list[Entry], HardState]:
    """The entries and hard state every founding member persists before its first start."""
    changes = [ConfChange(ConfChangeType.ADD_VOTER, v) for v in sorted(voters)]
    changes += [ConfChange(ConfChangeType.ADD_LEARNER, ln) for ln in sorted(learners)]
    if not any(cc.type == ConfChangeType.ADD_VOTER for cc in changes):
        raise ValueError("a cluster needs at least one voter")
    entries = [
        Entry(1, i, EntryType.CONF_CHANGE, encode_conf_change(cc))
        for i, cc in enumerate(changes, start=1)
    ]
    return entries, HardState(term=1, vote=None, commit=len(entries))
