"""Stops as the line page lists them: one history row per downtime (kind `downtime`).

Written from the downtime events as they are committed, in the same transaction
(buffer/history.py calls in here), so the row, the events and the asset's state always
agree: `downtime.started` opens the row, `downtime.ended` closes it, and
`downtime.classified` records an operator's reason in `detail`, and puts it on the state
segments it covers, so the shift's timeline and Pareto show it. A split cuts the state
segment at the split time.

`detail` is JSON: `plc_code` and `plc_reason` (the PLC's, as the downtime started or
ended), and `parts`, the operators' classifications, one per part (two once split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

if TYPE_CHECKING:
    from .outbox import CommittableEvent, Outbox

DOWNTIME_TYPES = frozenset({"downtime.started", "downtime.ended", "downtime.classified"})
MATCH_SLACK = 1.0  # seconds: a downtime's start and its state change come from one scan
EPSILON = 0.0005  # times are stored to the millisecond


@dataclass(frozen=True)
class DowntimeRow:
    asset: str
    id: str
    start: float
    end: float | None
    reason: str | None  # the effective reason of the whole (or the first part)
    work_order: str | None
    detail: dict[str, Any]


async def append(db: aiosqlite.Connection, event: CommittableEvent) -> None:
    """Inside the commit's transaction: what one downtime event changes."""
    data, asset = event.data, event.subject
    downtime_id = data.get("downtime_id")
    start = epoch(data.get("started_at"))
    if not isinstance(downtime_id, str) or start is None:
        return
    row = await _row(db, asset, downtime_id)
    if event.type == "downtime.started":
        if row is None:
            await _insert(db, asset, downtime_id, start, None, data)
    elif event.type == "downtime.ended":
        end = epoch(data.get("ended_at"))
        if row is None:  # started before this history existed
            await _insert(db, asset, downtime_id, start, end, data)
        else:
            detail = row.detail
            if not data.get("classified_by"):  # the PLC's reason, filled in late perhaps
                detail = {**detail, "plc_code": data.get("reason_code"),
                          "plc_reason": data.get("reason")}
            await db.execute("UPDATE history SET end = ?, reason = ?, detail = ? WHERE "
                             "kind = 'downtime' AND asset = ? AND ref = ?",
                             (end, data.get("reason"), json.dumps(detail), asset,
                              downtime_id))
    elif row is not None:
        await _classified(db, event, row)


async def _classified(db: aiosqlite.Connection, event: CommittableEvent,
                      row: DowntimeRow) -> None:
    data = event.data
    part, count = int(data.get("part", 1)), int(data.get("parts", 1))
    start = epoch(data.get("started_at"))
    end = epoch(data.get("ended_at"))
    assert start is not None
    parts = list(row.detail.get("parts") or [])[:count]
    while len(parts) < part:
        parts.append(None)
    parts[part - 1] = {"start": start, "end": end, "code": data.get("reason_code"),
                       "reason": data.get("reason"), "group": data.get("reason_group"),
                       "by": data.get("classified_by"), "event": event.id}
    detail = {**row.detail, "parts": parts}
    first = parts[0] or {}
    await db.execute("UPDATE history SET reason = ?, detail = ? WHERE kind = 'downtime' AND "
                     "asset = ? AND ref = ?",
                     (first.get("reason") or row.reason, json.dumps(detail), row.asset,
                      row.id))
    await _mark_segments(db, row.asset, start, end, str(data.get("reason")), part == 1)


async def _mark_segments(db: aiosqlite.Connection, asset: str, start: float,
                         end: float | None, reason: str, at_stop_start: bool) -> None:
    """The reason on the state segments over [start, end]: the timeline and Pareto read it.
    A segment that a part's edge cuts through (a split) becomes two."""
    for cut in (None if at_stop_start else start, end):
        if cut is None:
            continue
        inside = ("asset = ? AND kind = 'state' AND start < ? AND "
                  "(end IS NULL OR end > ?)")
        bounds = (asset, cut - EPSILON, cut + EPSILON)
        await db.execute("INSERT INTO history (asset, kind, start, end, state, reason, "
                         "work_order, micro) SELECT asset, kind, ?, end, state, reason, "
                         f"work_order, micro FROM history WHERE {inside}", (cut, *bounds))
        await db.execute(f"UPDATE history SET end = ? WHERE {inside}", (cut, *bounds))
    # The first part starts with the stop, whose state change may be a scan away.
    since = start - (MATCH_SLACK if at_stop_start else EPSILON)
    await db.execute("UPDATE history SET reason = ? WHERE asset = ? AND kind = 'state' AND "
                     "start > ? AND start < ? AND (end IS NULL OR end > ?)",
                     (reason, asset, since, (end if end is not None else float("inf"))
                      - EPSILON, start + EPSILON))


async def _insert(db: aiosqlite.Connection, asset: str, downtime_id: str, start: float,
                  end: float | None, data: dict[str, Any]) -> None:
    detail: dict[str, Any] = {"plc_code": data.get("reason_code"), "plc_reason": data.get("reason"),
              "parts": []}
    await db.execute("INSERT INTO history (asset, kind, start, end, reason, work_order, ref, "
                     "detail) VALUES (?, 'downtime', ?, ?, ?, ?, ?, ?)",
                     (asset, start, end, data.get("reason"), data.get("work_order"),
                      downtime_id, json.dumps(detail)))


async def _row(db: aiosqlite.Connection, asset: str, downtime_id: str) -> DowntimeRow | None:
    async with db.execute(_SELECT + "AND asset = ? AND ref = ?", (asset, downtime_id)) as rows:
        found = await rows.fetchone()
    return _from(found) if found is not None else None


_SELECT = ("SELECT asset, ref, start, end, reason, work_order, detail FROM history "
           "WHERE kind = 'downtime' ")


def _from(row: Any) -> DowntimeRow:
    try:
        detail = json.loads(row[6] or "{}")
    except ValueError:
        detail = {}
    return DowntimeRow(str(row[0]), str(row[1]), float(row[2]),
                       None if row[3] is None else float(row[3]), row[4], row[5],
                       detail if isinstance(detail, dict) else {})


async def downtime(outbox: Outbox, asset: str, downtime_id: str) -> DowntimeRow | None:
    """One stop of `asset`; None if the history has no such stop of that asset."""
    rows = await outbox.read(_SELECT + "AND asset = ? AND ref = ?", (asset, downtime_id))
    return _from(rows[0]) if rows else None


async def recent(outbox: Outbox, asset: str, since: float, limit: int = 200
                 ) -> list[DowntimeRow]:
    """The stops of `asset` open now or ended after `since`, newest first."""
    rows = await outbox.read(_SELECT + "AND asset = ? AND (end IS NULL OR end > ?) "
                             "ORDER BY start DESC LIMIT ?", (asset, since, limit))
    return [_from(row) for row in rows]


def epoch(value: Any) -> float | None:
    """An event's RFC 3339 time as epoch seconds; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
