"""The buffer's figures for the status page: size, backlog, dead letters, drops, alarms,
and the business impact of a backlog in the ERP's words.

A plant manager whose network is down asks what the ERP is missing, not how many rows
wait: "2 downtime starts, 1 production confirmation and 1 quality hold not yet in Odoo,
oldest 4 min". Counting by type is a GROUP BY over the whole backlog, so it is redone at
most every IMPACT_SECONDS; the totals beside it are fresh every time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .outbox import LANES, BufferStats, file_bytes

if TYPE_CHECKING:
    from .outbox import Outbox

IMPACT_SECONDS = 10.0
BUSINESS_LANES = (0, 1)  # holds and business events; telemetry is no ERP record
REASONS_SHOWN = 3
REASON_CHARS = 200

async def collect(outbox: Outbox) -> BufferStats:
    total = await outbox.read("SELECT COUNT(*) FROM events")
    used = await outbox.used_bytes()
    limits = outbox.limits
    result = BufferStats(path=str(outbox.path), epoch=outbox.epoch,
                         file_bytes=file_bytes(outbox.path), used_bytes=used,
                         events=int(total[0][0]), limits=limits.as_dict(),
                         fill=used / limits.hard_bytes if limits.hard_bytes else None)
    cursors_of: dict[str, dict[int, int]] = {}
    for uplink in outbox.uplinks:
        cursors = cursors_of[uplink] = await outbox.cursors(uplink)
        per_lane: dict[int, int] = {}
        oldest: float | None = None
        for lane in LANES:
            row = await outbox.read(
                "SELECT COUNT(*), MIN(committed_at) FROM events WHERE lane = ? AND position > ?",
                (lane, cursors[lane]))
            per_lane[lane] = int(row[0][0])
            if row[0][1] is not None:
                oldest = min(oldest, float(row[0][1])) if oldest else float(row[0][1])
        result.backlog[uplink] = per_lane
        result.oldest_pending_at[uplink] = oldest
        letters = await outbox.read(
            "SELECT status, COUNT(*) FROM dead_letters WHERE uplink = ? GROUP BY status",
            (uplink,))
        by_status = {str(s): int(n) for s, n in letters}
        result.dead_letters[uplink] = by_status.get("dead", 0)
        result.replays_queued[uplink] = by_status.get("queued", 0)
    for uplink, kind, count in await outbox.read("SELECT uplink, class, count FROM drops"):
        result.drops.setdefault(str(uplink), {})[str(kind)] = int(count)
    result.alarms = await outbox.alarms()
    result.impact = await _impact(outbox, cursors_of)
    return result


async def _impact(outbox: Outbox, cursors_of: dict[str, dict[int, int]]
                  ) -> dict[str, dict[str, Any]]:
    cached = outbox.impact_cache
    if cached is not None and time.monotonic() - cached[0] < IMPACT_SECONDS:
        return cached[1]
    impact = {uplink: await business_impact(outbox, uplink, cursors_of[uplink])
              for uplink in outbox.uplinks}
    outbox.impact_cache = (time.monotonic(), impact)
    return impact


async def business_impact(outbox: Outbox, uplink: str, cursors: dict[int, int]
                          ) -> dict[str, Any]:
    """{"pending": {type: {"count", "oldest_at"}}, "dead": {type: {"count", "reasons"}}}
    for the business events `uplink` has not delivered (beyond `cursors`), and those it
    refused."""
    pending: dict[str, dict[str, Any]] = {}
    for lane in BUSINESS_LANES:
        for kind, count, oldest in await outbox.read(
                "SELECT type, COUNT(*), MIN(committed_at) FROM events "
                "WHERE lane = ? AND position > ? GROUP BY type", (lane, cursors[lane])):
            entry = pending.setdefault(str(kind), {"count": 0, "oldest_at": float(oldest)})
            entry["count"] += int(count)
            entry["oldest_at"] = min(entry["oldest_at"], float(oldest))
    dead: dict[str, dict[str, Any]] = {}
    for kind, reason, count in await outbox.read(
            "SELECT type, reason, COUNT(*) FROM dead_letters WHERE uplink = ? AND "
            "status = 'dead' GROUP BY type, reason ORDER BY COUNT(*) DESC", (uplink,)):
        entry = dead.setdefault(str(kind), {"count": 0, "reasons": []})
        entry["count"] += int(count)
        if len(entry["reasons"]) < REASONS_SHOWN:
            entry["reasons"].append(str(reason)[:REASON_CHARS])
    return {"pending": pending, "dead": dead}
