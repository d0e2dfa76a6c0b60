"""History retention: the leader proposes ``CompactHistory`` entries.

Two reasons to propose one:

- the legacy limits ``history.retention_entries`` / ``history.retention_s`` (0: off) leave
  changes to forget: ``CompactHistory(through)`` cuts every change up to ``through``;
- with ``history.prune`` (the default), the oldest retained change is older than the
  replicated policy's age limit: ``CompactHistory(0)`` asks for pruning by policy alone.

Apply of every ``CompactHistory`` ends by pruning what the replicated retention policy (in
the state database: the newest 100 versions of every key and everything younger than 7
days are kept) no longer keeps, decided from the database and the entry's timestamp only
(``confman.node.state.retention``). Compaction travels through the log like any write, so
every node forgets exactly the same history at the same index; only the leader's settings
decide when.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from confman.api.context import ApiContext
from confman.node.config import NodeConfig
from confman.node.state.commands import (
    CompactHistory,
    Request,
    format_timestamp,
    timestamp_micros,
)
from confman.node.state.machine import ApplyStatus
from confman.node.state.queries import Reader

log = logging.getLogger("confman.api")
#: The actor recorded for compactions.
ACTOR = "confman"
#: After a prune that found nothing to do, how long the leader waits before trying again
#: (old changes the policy keeps by count stay old: without a pause they would cost a log
#: entry every interval).
PRUNE_IDLE_S = 600.0


def retention_configured(cfg: NodeConfig) -> bool:
    return bool(cfg.history_prune or cfg.history_retention_entries or cfg.history_retention_s)


def compaction_target(cfg: NodeConfig, reader: Reader, now: datetime) -> int | None:
    """The index the legacy limits compact the history through now, or None."""
    with reader.consistent():
        applied = reader.applied_index()
        floor = reader.history_floor()
        target = 0
        step = 1
        if cfg.history_retention_entries:
            target = applied - cfg.history_retention_entries
            step = max(1, cfg.history_retention_entries // 10)  # not one entry per write
        if cfg.history_retention_s:
            cutoff = format_timestamp(now - timedelta(seconds=cfg.history_retention_s))
            young = reader.first_change_since(cutoff)
            target = max(target, applied if young is None else young - 1)
        if target - floor < step or not reader.has_changes_through(target):
            return None
        return target


def prune_due(reader: Reader, now: datetime) -> bool:
    """True when the oldest retained change is older than the policy's age limit."""
    with reader.consistent():
        oldest = reader.oldest_change_us()
        _, keep_age_s = reader.retention_policy()
    now_us = timestamp_micros(format_timestamp(now))
    return oldest is not None and oldest < now_us - keep_age_s * 1_000_000


class PrunePacing:
    """When the leader may propose the next prune: at once while the last one had more to
    do, ``PRUNE_IDLE_S`` after one that found nothing."""

    def __init__(self) -> None:
        self._not_before = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self._not_before

    def done(self, found_nothing: bool) -> None:
        self._not_before = time.monotonic() + PRUNE_IDLE_S if found_nothing else 0.0


async def compact_once(ctx: ApiContext, pacing: PrunePacing | None = None) -> int | None:
    """Propose a compaction if this node leads and one is due; the index compacted through."""
    rt = ctx.rt
    reader = rt.reader
    if rt.role != "leader" or reader is None:
        return None
    now = datetime.now(UTC)
    cfg = rt.cfg
    cut = compaction_target(cfg, reader, now)
    pruning = cut is None
    if pruning:
        if not cfg.history_prune or (pacing is not None and not pacing.ready()):
            return None
        if not prune_due(reader, now):
            return None
    target = 0 if cut is None else cut
    result = await rt.propose(Request(CompactHistory(target), ACTOR, format_timestamp(now)))
    through = None if result.value is None else result.value.get("compactedThrough")
    if pruning and pacing is not None:
        pacing.done(result.status is ApplyStatus.NOOP)
    if result.status is ApplyStatus.NOOP:
        return None
    log.info("history compacted through index %s (%s)", through, result.detail)
    return through if isinstance(through, int) else None


async def run_compactor(ctx: ApiContext) -> None:
    """Check every ``history.compact_interval_ms`` until cancelled."""
    interval = ctx.rt.cfg.history_compact_interval_ms / 1000
    pacing = PrunePacing()
    while True:
        await asyncio.sleep(interval)
        try:
            await compact_once(ctx, pacing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not leader any more, no quorum, timeout: next round
            log.debug("history compaction skipped: %s", exc)
