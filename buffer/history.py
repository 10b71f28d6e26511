"""The shift's history: what each asset did, kept for the status page's pictures.

Two kinds of rows, both written from the business events as they are committed, in the
same transaction (the pipeline is the single writer, so history and events never
disagree, and a restart keeps both):

- `state`: one row per state segment, from `machine.state_changed`; the open one has no
  end. `downtime.started` puts its reason on the down segment it explains;
  `downtime.micro_stop` marks a stop as a micro-stop (a performance loss in OEE, not an
  availability loss) with its reason.
- `parts`: one row per `production.confirmed`: good and scrap over its interval.

Retention trims history older than its age limit, and under space pressure right after
raw telemetry and before any business event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiosqlite

from . import downtimes
from .downtimes import DOWNTIME_TYPES, MATCH_SLACK
from .downtimes import epoch as _epoch

if TYPE_CHECKING:
    from .outbox import CommittableEvent, Outbox

HISTORY_TYPES = frozenset({"machine.state_changed", "downtime.started",
                           "downtime.micro_stop", "production.confirmed", *DOWNTIME_TYPES})


@dataclass(frozen=True)
class Segment:
    asset: str
    start: float
    end: float | None
    state: str
    reason: str | None
    work_order: str | None
    micro: bool


@dataclass(frozen=True)
class HistoryMark:
    """Not an event: the state's device went silent (`state` "no_data") at `at`, or data
    came back at `at` with the asset in `state` (None: not known yet)."""

    asset: str
    at: float
    state: str | None


@dataclass(frozen=True)
class Parts:
    asset: str
    start: float
    end: float
    good: int
    scrap: int
    work_order: str | None


async def append(db: aiosqlite.Connection, events: Sequence[CommittableEvent]) -> None:
    """Inside the commit's transaction: the history rows these events make."""
    for event in events:
        kind = event.type
        if kind not in HISTORY_TYPES:
            continue
        # The event's own fields: nothing to decode on the commit path.
        data, at = event.data, event.time
        if kind in DOWNTIME_TYPES:
            await downtimes.append(db, event)
        if kind == "machine.state_changed":
            await db.execute("UPDATE history SET end = ? WHERE asset = ? AND kind = 'state' "
                             "AND end IS NULL", (at, event.subject))
            await db.execute("INSERT INTO history (asset, kind, start, state) "
                             "VALUES (?, 'state', ?, ?)", (event.subject, at, data.get("state")))
        if kind in ("downtime.started", "downtime.micro_stop"):
            started = _epoch(data.get("started_at"))
            if started is None:
                continue
            await db.execute(
                "UPDATE history SET reason = ?, work_order = ?, micro = ? WHERE rowid = ("
                "SELECT rowid FROM history WHERE asset = ? AND kind = 'state' AND start <= ? "
                "ORDER BY start DESC LIMIT 1)",
                (data.get("reason"), data.get("work_order"),
                 1 if kind == "downtime.micro_stop" else 0, event.subject,
                 started + MATCH_SLACK))
        elif kind == "production.confirmed":
            start, end = _epoch(data.get("interval_start")), _epoch(data.get("interval_end"))
            if start is None or end is None:
                continue
            await db.execute(
                "INSERT INTO history (asset, kind, start, end, work_order, good, scrap) "
                "VALUES (?, 'parts', ?, ?, ?, ?, ?)",
                (event.subject, start, end, data.get("work_order"), int(data.get("good", 0)),
                 int(data.get("scrap", 0))))


async def append_marks(db: aiosqlite.Connection, marks: Sequence[HistoryMark]) -> None:
    """Inside the commit's transaction: close the open segment at each mark and open the
    one it starts (no data; or, when data is back, the state the asset is in)."""
    for mark in marks:
        await db.execute("UPDATE history SET end = max(start, ?) WHERE asset = ? AND "
                         "kind = 'state' AND end IS NULL", (mark.at, mark.asset))
        if mark.state is not None:
            await db.execute("INSERT INTO history (asset, kind, start, state) "
                             "VALUES (?, 'state', ?, ?)", (mark.asset, mark.at, mark.state))


async def segments(outbox: Outbox, asset: str, since: float, until: float) -> list[Segment]:
    """State segments overlapping [since, until], oldest first."""
    rows = await outbox.read(
        "SELECT start, end, state, reason, work_order, micro FROM history "
        "WHERE asset = ? AND kind = 'state' AND start < ? AND (end IS NULL OR end > ?) "
        "ORDER BY start", (asset, until, since))
    return [Segment(asset, float(r[0]), None if r[1] is None else float(r[1]), str(r[2]),
                    r[3], r[4], bool(r[5])) for r in rows]


async def parts(outbox: Outbox, asset: str, since: float, until: float) -> list[Parts]:
    rows = await outbox.read(
        "SELECT start, end, good, scrap, work_order FROM history WHERE asset = ? AND "
        "kind = 'parts' AND end > ? AND start < ? ORDER BY start", (asset, since, until))
    return [Parts(asset, float(r[0]), float(r[1]), int(r[2]), int(r[3]), r[4]) for r in rows]


async def record_restart(outbox: Outbox, now: float, last: float | None = None,
                         quiet: float = 5.0) -> None:
    """At start: the time since the last commit (`last`; by default the buffer's latest
    state write) is a `gap` row, the agent was not running, so that a shift's figures can
    say what was assumed rather than seen."""
    if last is None:
        rows = await outbox.read("SELECT max(updated_at) FROM asset_state")
        last = None if not rows or rows[0][0] is None else float(rows[0][0])
    if last is None or now - float(last) < quiet:
        return
    async with outbox.transaction() as db:
        await db.execute("INSERT INTO history (asset, kind, start, end) VALUES "
                         "('*', 'gap', ?, ?)", (float(last), now))


async def gaps(outbox: Outbox, since: float, until: float) -> list[tuple[float, float]]:
    """Times the agent was not running, overlapping [since, until], clipped to it."""
    rows = await outbox.read("SELECT start, end FROM history WHERE kind = 'gap' AND "
                             "start < ? AND end > ? ORDER BY start", (until, since))
    return [(max(float(a), since), min(float(b), until)) for a, b in rows]
