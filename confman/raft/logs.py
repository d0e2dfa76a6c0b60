"""Debug-level structured logs of the core's decisions (logger ``confman.raft``).

Each decision is one record: the message reads ``n1 term 5: vote-refused to=n2 reason=...``
and ``record.raft`` holds the same facts as a dict (``node``, ``term``, ``event`` and the
fields) for structured handlers. Call sites test ``enabled()`` first, so with debug off a
decision costs one cached level check and builds nothing.
"""

from __future__ import annotations

import logging

from confman.raft.types import NodeId

log = logging.getLogger("confman.raft")
_DEBUG = logging.DEBUG


def enabled() -> bool:
    """Whether decisions are logged (debug on for ``confman.raft``)."""
    return log.isEnabledFor(_DEBUG)


def decision(node: NodeId, term: int, event: str, **fields: object) -> None:
    """Log one decision of ``node`` at debug level (callers check ``enabled()`` first)."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.debug(
        "%s term %d: %s %s",
        node,
        term,
        event,
        text,
        extra={"raft": {"node": node, "term": term, "event": event, **fields}},
    )
