"""Membership changes: their log encoding and how they transform a ``ConfState``."""

from __future__ import annotations

import msgpack

from confman.raft.types import ConfChange, ConfChangeType, ConfState

_VERSION = 1


class ConfChangeError(ValueError):
    """A membership change that cannot apply to the current configuration."""


def encode_conf_change(cc: ConfChange) -> bytes:
    """Encode a change for the data of a CONF_CHANGE log entry."""
    data: bytes = msgpack.packb([_VERSION, int(cc.type), cc.node_id, cc.context])
    return data


def decode_conf_change(data: bytes) -> ConfChange:
    """Decode a CONF_CHANGE entry's data; raises ``ConfChangeError`` on garbage."""
    try:
        version, kind, node_id, context = msgpack.unpackb(data)
        if version != _VERSION:
            raise ConfChangeError(f"unknown conf change format version {version}")
        return ConfChange(ConfChangeType(kind), str(node_id), bytes(context))
    except ConfChangeError:
        raise
    except Exception as exc:  # msgpack raises several types on garbage
        raise ConfChangeError(f"undecodable conf change: {exc}") from exc


def apply_to(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``; raises ``ConfChangeError`` if it does not apply."""
    voters, learners = list(conf.voters), list(conf.learners)
    nid = cc.node_id
    if cc.type == ConfChangeType.ADD_VOTER:
        if nid in voters:
            raise ConfChangeError(f"{nid} is already a voter")
        if nid in learners:
            learners.remove(nid)
        voters.append(nid)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        if nid in voters:
            raise ConfChangeError(f"{nid} is a voter; demoting a voter is not supported")
        if nid in learners:
            raise ConfChangeError(f"{nid} is already a learner")
        learners.append(nid)
    elif cc.type == ConfChangeType.REMOVE:
        if nid in voters:
            if len(voters) == 1:
                raise ConfChangeError(f"cannot remove {nid}, the last voter")
            voters.remove(nid)
        elif nid in learners:
            learners.remove(nid)
        else:
            raise ConfChangeError(f"{nid} is not a member")
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
