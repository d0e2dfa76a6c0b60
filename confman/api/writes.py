"""The write path: leader check (307/503), proposal, and the mapping of its outcomes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web

from confman.api.auth import Principal
from confman.api.context import ApiContext
from confman.api.problems import (
    Problem,
    leader_elsewhere,
    no_leader,
    node_stopping,
    redirect_to_leader,
)
from confman.api.validation import forward_param
from confman.node.errors import (
    NodeStopped,
    NoLeader,
    NotLeader,
    ProposalDropped,
    ReplicationTimeout,
)
from confman.node.state.commands import Command, Request, format_timestamp
from confman.node.state.machine import ApplyResult, ApplyStatus

log = logging.getLogger("confman.api")
_RETRY = {"Retry-After": "1"}


def ensure_leader(request: web.Request, ctx: ApiContext) -> None:
    """Raise a redirect or 503 unless this node is the leader (before reading a body).

    The middleware turns the redirect into a forwarded write when forwarding is asked for.
    """
    forward_param(request)  # a malformed ?forward= is a 400 on any node
    rt = ctx.rt
    if rt.role != "leader":
        raise leader_elsewhere(request, rt.leader_id, rt.leader_url)


def scoped_idempotency_key(caller: str, key: str) -> str:
    """The key under which ``caller``'s ``Idempotency-Key`` is remembered.

    Keys are per caller (by API key name) so that one tenant's key neither blocks nor
    reveals another's: the replicated request carries ``<len(caller)>:<caller>:<key>``,
    which no other (caller, key) pair can spell. The state machine stores it as given, so
    the log format is unchanged; only a retry that spans an upgrade to scoped keys is not
    recognised as one (its first attempt was remembered under the bare key).
    """
    return f"{len(caller)}:{caller}:{key}"


async def propose(
    request: web.Request,
    ctx: ApiContext,
    principal: Principal,
    command: Command,
    idempotency_key: str | None,
) -> ApplyResult:
    """Replicate ``command`` as ``principal``; the applied result or a Problem/Redirect."""
    return await propose_at(request.raw_path, ctx, principal, command, idempotency_key)


async def propose_at(
    raw_path: str,
    ctx: ApiContext,
    principal: Principal,
    command: Command,
    idempotency_key: str | None,
) -> ApplyResult:
    """``propose`` for a request known by its raw path (and query); ``idempotency_key`` is
    scoped to ``principal`` (``scoped_idempotency_key``)."""
    req = Request(
        command,
        principal.name,
        format_timestamp(datetime.now(UTC)),
        None
        if idempotency_key is None
        else scoped_idempotency_key(principal.name, idempotency_key),
        ctx.idempotency_ttl_s,
    )
    try:
        result = await ctx.rt.propose(req)
    except NotLeader as exc:
        raise redirect_to_leader(raw_path, exc.leader_id, exc.leader_url) from None
    except NoLeader:
        raise no_leader() from None
    except ReplicationTimeout as exc:
        raise Problem(
            503,
            "Replication timed out",
            f"{exc}; retry with the same Idempotency-Key to be safe",
            slug="replication-timeout",
            headers=_RETRY,
        ) from None
    except ProposalDropped as exc:
        raise Problem(
            503,
            "Write not committed",
            f"{exc}; it was not applied and may be retried",
            slug="write-dropped",
            headers=_RETRY,
        ) from None
    except NodeStopped:
        raise node_stopping() from None
    if result.status == ApplyStatus.KEY_REUSED:
        raise Problem(
            422,
            "Idempotency key reused",
            result.detail,
            slug="idempotency-key-reused",
            headers={"X-Confman-Index": str(result.index)},
        )
    if result.status == ApplyStatus.REJECTED:
        log.error("entry %d rejected by the state machine: %s", result.index, result.detail)
        raise Problem(500, detail=f"The change was rejected: {result.detail}")
    return result


def precondition_failed(result: ApplyResult) -> Problem:
    """412 for a failed If-Match/If-None-Match, with the current ETag when there is one."""
    headers = {"X-Confman-Index": str(result.index)}
    if result.value is not None and "version" in result.value:
        headers["ETag"] = f'"{result.value["version"]}"'
    return Problem(412, "Precondition failed", result.detail, headers=headers)
