"""Which shift is it? From `production.shifts` (local start times) in the asset's time
zone; without shifts, a shift is a calendar day in that zone. DST is the zone's business:
a shift from 22:00 to 06:00 across a clock change lasts 7 or 9 hours, as it does on the
floor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    label: str  # "2026-12-02 06:00" (the local start)


def shift_at(at: float, shifts: list[str], zone: str) -> Window:
    """The shift that holds `at` (epoch seconds)."""
    tz = ZoneInfo(zone)
    local = datetime.fromtimestamp(at, tz)
    starts = sorted(time.fromisoformat(s) for s in shifts) or [time(0, 0)]
    candidates = [datetime.combine(local.date() + timedelta(days=offset), start, tz)
                  for offset in (-1, 0, 1) for start in starts]
    candidates.sort()
    begin = max(c for c in candidates if c.timestamp() <= at)
    end = min(c for c in candidates if c.timestamp() > at)
    return Window(begin.timestamp(), end.timestamp(), begin.strftime("%Y-%m-%d %H:%M"))


def previous(window: Window, shifts: list[str], zone: str) -> Window:
    return shift_at(window.start - 1.0, shifts, zone)
