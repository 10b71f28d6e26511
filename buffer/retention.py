"""Retention: keep the buffer inside its limits without losing what matters.

Three limits, enforced in this order by `enforce()`:

1. `telemetry_age`: raw telemetry older than this is dropped.
2. `size` (soft): above it, raw telemetry is dropped, oldest first, while every
   uplink is delivering. While an uplink is down, the excess is its backlog, which
   it will want when it is back: that waits for the hard limit.
3. `hard_size`: above it, business events are dropped too, oldest first,
   holds last, with a loud alarm.

Every drop is counted per uplink that had not yet received the event, and
per class (hold, business, telemetry), and raises the alarm `buffer.dropped`,
which stays until someone acknowledges it. Whatever a limit drops, it first takes
rows that only *unhealthy* uplinks still need (positions every healthy uplink
has already acknowledged): a dead uplink loses its own oldest backlog, and a
healthy one never loses an event while that is possible.

Fill level is measured in live pages (page_count - freelist_count), which
shrinks when rows are deleted, unlike the file, whose freed pages are reused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite

    from .outbox import Outbox

log = logging.getLogger("floorlink.buffer")

CHUNK_ROWS = 2000
FILL_ALARM = "buffer.fill"
HARD_LIMIT_ALARM = "buffer.hard_limit"
DROPPED_ALARM = "buffer.dropped"
# The one statement that raises an alarm (or updates a raised one): it stays until cleared.
RAISE_ALARM = ("INSERT INTO alarms (key, severity, message, raised_at) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(key) DO UPDATE SET severity = excluded.severity, "
               "message = excluded.message")
WARN_AT, CRITICAL_AT = 0.80, 0.95
HISTORY_AGE = 8 * 86400.0  # a week of shifts and a day more, for the previous shift view
HISTORY_KEPT_UNDER_PRESSURE = 2 * 86400.0  # the current and previous shift, at least
TRIM_HISTORY = "DELETE FROM history WHERE end IS NOT NULL AND end < ?"
TELEMETRY, BUSINESS, HOLD = 2, 1, 0
CLASSES = {HOLD: "hold", BUSINESS: "business", TELEMETRY: "telemetry"}


@dataclass(frozen=True)
class Limits:
    size_bytes: int = 0  # 0: no soft limit
    hard_bytes: int = 0  # 0: no hard limit
    telemetry_age: float = 0.0  # seconds; 0: no age limit
    reserve_bytes: int = 0  # disk space held back for a full disk (see space.py); 0: none

    def as_dict(self) -> dict[str, float]:
        return {"size_bytes": self.size_bytes, "hard_bytes": self.hard_bytes,
                "telemetry_age_s": self.telemetry_age, "reserve_bytes": self.reserve_bytes}


Handed = dict[str, dict[int, int]]  # uplink -> lane -> last position handed to it


@dataclass
class Enforced:
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # uplink -> class -> n
    deleted_rows: int = 0
    fill: float | None = None
    handed: Handed = field(default_factory=dict)

    def total(self, kind: str) -> int:
        return max((by_class.get(kind, 0) for by_class in self.dropped.values()), default=0)


async def enforce(outbox: Outbox, healthy: Sequence[str], now: float | None = None,
                  handed: Handed | None = None) -> Enforced:
    """Apply the limits once; `healthy` names the uplinks currently delivering, `handed`
    what each uplink already holds (see Forwarder.handed): not lost if its row goes."""
    limits = outbox.limits
    now = time.time() if now is None else now
    result = Enforced(handed=handed or {})
    if limits.telemetry_age:
        cutoff = now - limits.telemetry_age
        why = f"telemetry_age ({limits.telemetry_age:g} s)"
        while await _drop_oldest(outbox, TELEMETRY, healthy, result, older_than=cutoff,
                                 why=why):
            pass
    # While an uplink is down, what lies above the soft limit is its backlog, which it
    # wants when it comes back: a plant sized the disk (hard_size) for outages. So the
    # soft limit trims only a backlog that grows while every uplink is up (an uplink
    # slower than the line), and a dead uplink's backlog waits for the hard limit.
    if limits.size_bytes and set(outbox.uplinks) <= set(healthy):
        while await outbox.used_bytes() > limits.size_bytes:
            if not await _drop_oldest(outbox, TELEMETRY, healthy, result, why="the soft "
                                      f"limit ({limits.size_bytes / 1e6:g} MB)"):
                break
    # The status page's history: past its age always; under the hard limit, after raw
    # telemetry and before any business event (only the pictures lose detail).
    await _trim_history(outbox, now - HISTORY_AGE)
    if limits.hard_bytes:
        hard_before = result.total("business") + result.total("hold")
        # First everything only unhealthy uplinks still need, in every lane; only then
        # what a healthy uplink needs. Within each pass: telemetry, history, business,
        # holds last.
        # Measured again only after something was deleted: each reading is a round trip
        # to the buffer's thread, and this runs every few seconds.
        used = await outbox.used_bytes()
        for only_unhealthy in (True, False):
            for lane in (TELEMETRY, BUSINESS, HOLD):
                if lane == BUSINESS and used > limits.hard_bytes:
                    await _trim_history(outbox, now - HISTORY_KEPT_UNDER_PRESSURE)
                    used = await outbox.used_bytes()
                while used > limits.hard_bytes:
                    if not await _drop_oldest(outbox, lane, healthy, result,
                                              only_unhealthy=only_unhealthy,
                                              why=f"the hard limit ({limits.hard_bytes / 1e6:g}"
                                              " MB)"):
                        break
                    used = await outbox.used_bytes()
        lost = result.total("business") + result.total("hold") - hard_before
        if lost:
            message = (f"the buffer reached its hard limit ({limits.hard_bytes / 1e6:g} MB): "
                       f"{_describe(result.dropped)} dropped. Fix the uplink that is not "
                       "delivering, or raise buffer.limits.hard_size if the disk allows")
            log.error("%s", message)
            await outbox.raise_alarm(HARD_LIMIT_ALARM, "critical", message)
        result.fill = used / limits.hard_bytes
        await _fill_alarm(outbox, result.fill)
    if result.total("telemetry"):
        log.warning("retention dropped telemetry: %s", _describe(result.dropped))
    return result


async def _trim_history(outbox: Outbox, before: float) -> None:
    async with outbox.transaction() as db:
        await db.execute(TRIM_HISTORY, (before,))


async def free_space(outbox: Outbox, healthy: Sequence[str],
                     handed: Handed | None = None) -> Enforced:
    """The disk is full below the limits: drop one chunk of the oldest telemetry, so that
    business events keep fitting (telemetry goes first, as at every limit)."""
    result = Enforced(handed=handed or {})
    await outbox.make_room()
    await _drop_oldest(outbox, TELEMETRY, healthy, result, why="the disk was full")
    await outbox.checkpoint()  # the freed pages now take new events without growing the file
    if result.total("telemetry"):
        log.warning("the disk is full: dropped the oldest telemetry: %s",
                    _describe(result.dropped))
    return result


async def _drop_oldest(outbox: Outbox, lane: int, healthy: Sequence[str], result: Enforced,
                       older_than: float | None = None, only_unhealthy: bool = False,
                       why: str = "a limit") -> bool:
    """Delete one chunk of the oldest rows of `lane`; False when nothing was eligible.

    Rows every healthy uplink already acknowledged go first; unless `only_unhealthy`,
    a limit then takes rows a healthy uplink still needs.
    """
    protected = await _healthy_floor(outbox, lane, healthy)
    if protected is None:
        ceilings: tuple[int | None, ...] = (None,)
    else:
        ceilings = (protected,) if only_unhealthy else (protected, None)
    for ceiling in ceilings:
        async with outbox.transaction() as db:
            upper = await _chunk_end(db, lane, ceiling, older_than)
            if upper is None:
                continue
            await _count_drops(db, outbox.uplinks, lane, upper, result, why)
            cursor = await db.execute("DELETE FROM events WHERE lane = ? AND position <= ?",
                                      (lane, upper))
            result.deleted_rows += max(cursor.rowcount, 0)
            return True
    return False


async def _chunk_end(db: aiosqlite.Connection, lane: int, ceiling: int | None,
                     older_than: float | None) -> int | None:
    """The last position of the next chunk to drop, or None if nothing qualifies."""
    rows = list(await db.execute_fetchall(
        "SELECT position, committed_at FROM events WHERE lane = ? AND position <= ? "
        "ORDER BY position LIMIT ?",
        (lane, ceiling if ceiling is not None else 2**62, CHUNK_ROWS)))
    if older_than is not None:
        # Only the leading run that is old enough: positions are what deletion goes by.
        old = 0
        while old < len(rows) and float(rows[old][1]) < older_than:
            old += 1
        rows = rows[:old]
    return int(rows[-1][0]) if rows else None


async def _healthy_floor(outbox: Outbox, lane: int, healthy: Sequence[str]) -> int | None:
    """Positions at or below this are acknowledged by every healthy uplink (None: no
    healthy uplink, so nothing is protected)."""
    healthy = [u for u in healthy if u in outbox.uplinks]
    if not healthy:
        return None
    cursors = [(await outbox.cursors(u))[lane] for u in healthy]
    return min(cursors)


async def _count_drops(db: aiosqlite.Connection, uplinks: Sequence[str], lane: int, upper: int,
                       result: Enforced, why: str) -> None:
    kind = CLASSES[lane]
    targets: list[tuple[str, int]] = []
    if not uplinks:
        targets.append(("-", 0))
    for uplink in uplinks:
        row = next(iter(await db.execute_fetchall(
            "SELECT position FROM cursors WHERE uplink = ? AND lane = ?", (uplink, lane))), None)
        # What the uplink already holds reaches it without the row: not a loss to it.
        holds = result.handed.get(uplink, {}).get(lane, 0)
        targets.append((uplink, max(int(row[0]) if row else 0, holds)))
    for uplink, acknowledged in targets:
        row = next(iter(await db.execute_fetchall(
            "SELECT COUNT(*) FROM events WHERE lane = ? AND position > ? AND position <= ?",
            (lane, acknowledged, upper))), None)
        count = int(row[0]) if row else 0
        if not count:
            continue
        by_class = result.dropped.setdefault(uplink, {})
        by_class[kind] = by_class.get(kind, 0) + count
        await count_drops(db, [uplink], kind, count, why)


async def count_drops(db: aiosqlite.Connection, uplinks: Sequence[str], kind: str, count: int,
                      why: str) -> None:
    """Count `count` events of class `kind` as lost to each of `uplinks`, and raise the
    alarm that says so, in the caller's transaction."""
    now = time.time()
    for uplink in uplinks:
        await db.execute(
            "INSERT INTO drops (uplink, class, count, last_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(uplink, class) DO UPDATE SET count = count + excluded.count, "
            "last_at = excluded.last_at", (uplink, kind, count, now))
    totals: dict[str, int] = {}
    for row in await db.execute_fetchall(
            "SELECT class, MAX(count) FROM drops GROUP BY class"):
        totals[str(row[0])] = int(row[1])
    serious = totals.get("business", 0) or totals.get("hold", 0)
    counts = ", ".join(f"{totals.get(k, 0)} {k}" for k in ("hold", "business", "telemetry"))
    message = (f"events were dropped from the buffer: {counts} so far; the latest because of "
               f"{why}. They are counted per uplink in `floorlink buffer stats`. Acknowledge "
               f"with `floorlink buffer alarms --clear {DROPPED_ALARM}`")
    # Stays until acknowledged: clearing it is a person's statement that they know.
    await db.execute(RAISE_ALARM, (DROPPED_ALARM, "critical" if serious else "warning",
                                   message, now))


async def _fill_alarm(outbox: Outbox, fill: float) -> None:
    current = {a.key: a for a in await outbox.alarms()}.get(FILL_ALARM)
    if fill >= WARN_AT:
        severity = "critical" if fill >= CRITICAL_AT else "warning"
        message = (f"the buffer is {fill:.0%} full ({outbox.limits.hard_bytes / 1e6:g} MB hard "
                   "limit); at 100% business events are dropped. An uplink is not keeping up")
        if current is None or current.severity != severity:
            (log.error if severity == "critical" else log.warning)("%s", message)
        await outbox.raise_alarm(FILL_ALARM, severity, message)
    elif current is not None:
        log.info("the buffer is back below %d%% full", int(WARN_AT * 100))
        await outbox.clear_alarm(FILL_ALARM)


def _describe(dropped: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{uplink}: " + ", ".join(f"{n} {kind}" for kind, n in by_class.items())
                     for uplink, by_class in dropped.items()) or "nothing"
