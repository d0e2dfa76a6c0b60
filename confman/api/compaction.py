"""History retention: the leader proposes ``CompactHistory`` when the configured limits
(``history.retention_entries``, ``history.retention_s``) leave changes to forget.

Compaction travels through the log like any write, so every node forgets exactly the same
history at the same index; only the leader's settings matter.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from confman.api.context import ApiContext
from confman.node.config import NodeConfig
from confman.node.state.commands import CompactHistory, Request, format_timestamp
from confman.node.state.queries import Reader

log = logging.getLogger("confman.api")
#: The actor recorded for compactions.
ACTOR = "confman"


def retention_configured(cfg: NodeConfig) -> bool:
    return bool(cfg.history_retention_entries or cfg.history_retention_s)


def compaction_target(cfg: NodeConfig, reader: Reader, now: datetime) -> int | None:
    """The index to compact the history through now, or None when nothing is due."""
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


async def compact_once(ctx: ApiContext) -> int | None:
    """Propose a compaction if this node leads and one is due; the index compacted through."""
    rt = ctx.rt
    reader = rt.reader
    if rt.role != "leader" or reader is None:
        return None
    now = datetime.now(UTC)
    target = compaction_target(rt.cfg, reader, now)
    if target is None:
        return None
    await rt.propose(Request(CompactHistory(target), ACTOR, format_timestamp(now)))
    log.info("history compacted through index %d", target)
    return target


async def run_compactor(ctx: ApiContext) -> None:
    """Check every ``history.compact_interval_ms`` until cancelled."""
    interval = ctx.rt.cfg.history_compact_interval_ms / 1000
    while True:
        await asyncio.sleep(interval)
        try:
            await compact_once(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not leader any more, no quorum, timeout: next round
            log.debug("history compaction skipped: %s", exc)
