"""Errors the runtime raises to its callers (the HTTP layer maps them to status codes)."""

from __future__ import annotations


class NodeError(Exception):
    """Base class of runtime errors."""


class NotLeader(NodeError):
    """This node is not the leader; ``leader_url`` is the leader's HTTP URL when known."""

    def __init__(self, leader_id: str | None, leader_url: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id
        self.leader_url = leader_url


class NoLeader(NodeError):
    """No leader is known (election in progress or no quorum)."""


class ReplicationTimeout(NodeError):
    """Commitment was not confirmed in time; the write may still commit later."""


class ProposalDropped(NodeError):
    """The proposal was definitely not committed (overwritten or refused); safe to retry."""


class ReadTimeout(NodeError):
    """A consistent read could not be confirmed in time."""


class NodeStopped(NodeError):
    """The node is shutting down."""
