"""A shift's figures from its history: time in each state, downtime by reason (the
Pareto), parts per hour, and OEE = availability x performance x quality.

The rules (docs/events.md, "Shift figures and OEE", has a worked example):
- Shift time is the window so far (the whole window once it has ended).
- Planned time = shift time - planned stops (`planned_stop`).
- Run time = running + micro-stops: a stop shorter than the asset's
  `downtime.micro_stop` is a performance loss, not an availability loss.
- Availability = run time / planned time. Down, idle, setup and unknown codes all take
  time the machine was planned to run; no data is reported on its own line and left
  out of planned time (nothing is known of it).
- Performance = ideal cycle x parts made / run time (capped at 1: a faster-than-ideal
  shift means the ideal is set too slow).
- Quality = good / (good + scrap).
- OEE = availability x performance x quality; without an ideal cycle, null.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from buffer.history import Parts, Segment

from .windows import Window

STATES = ("running", "idle", "down", "setup", "planned_stop", "unknown", "no_data")


@dataclass
class ShiftFigures:
    label: str
    start: float
    end: float
    seconds: dict[str, float] = field(default_factory=dict)  # state -> seconds in it
    micro_stop_s: float = 0.0
    good: int = 0
    scrap: int = 0
    downtime_by_reason: dict[str, dict[str, float]] = field(default_factory=dict)
    parts_per_hour: list[dict[str, Any]] = field(default_factory=list)
    availability: float | None = None
    performance: float | None = None
    quality: float | None = None
    oee: float | None = None

    def view(self) -> dict[str, Any]:
        view = asdict(self)
        for key in ("availability", "performance", "quality", "oee"):
            if view[key] is not None:
                view[key] = round(view[key], 4)
        view["seconds"] = {k: round(v, 1) for k, v in self.seconds.items()}
        return view


def compute(window: Window, now: float, segments: Sequence[Segment], parts: Sequence[Parts],
            ideal_cycle: float | None = None, by_work_order: dict[str, float] | None = None,
            parts_per_cycle: int = 1, micro_stop: float = 0.0) -> ShiftFigures:
    """`micro_stop` is the asset's threshold: a stop shorter than it is a micro-stop,
    whether derivation reported it one by one or summarised it."""
    until = min(now, window.end)
    figures = ShiftFigures(window.label, window.start, window.end,
                           seconds=dict.fromkeys(STATES, 0.0))
    known_from = until
    for segment in segments:
        start = max(segment.start, window.start)
        end = min(segment.end if segment.end is not None else until, until)
        if end <= start:
            continue
        known_from = min(known_from, start)
        length = end - start
        if is_micro_stop(segment, micro_stop):
            figures.micro_stop_s += length
            continue
        state = segment.state if segment.state in STATES else "unknown"
        figures.seconds[state] += length
        if state == "down":
            reason = segment.reason or "no reason given"
            entry = figures.downtime_by_reason.setdefault(reason, {"minutes": 0.0, "count": 0})
            entry["minutes"] += length / 60
            entry["count"] += 1
    # Before the first segment the agent knew nothing of this shift.
    figures.seconds["no_data"] += max(0.0, known_from - window.start)
    ideal_time = 0.0
    hours: dict[int, dict[str, Any]] = {}
    for made in parts:
        share = _overlap(made.start, made.end, window.start, until)
        if share <= 0:
            continue
        good, scrap = round(made.good * share), round(made.scrap * share)
        figures.good += good
        figures.scrap += scrap
        cycle = _cycle(made.work_order, ideal_cycle, by_work_order or {})
        if cycle is not None:
            ideal_time += cycle * (good + scrap) / parts_per_cycle
        hour = int(max(made.start, window.start) // 3600 * 3600)
        bucket = hours.setdefault(hour, {"hour": hour, "good": 0, "scrap": 0})
        bucket["good"] += good
        bucket["scrap"] += scrap
    figures.parts_per_hour = [hours[h] for h in sorted(hours)]
    figures.downtime_by_reason = dict(sorted(
        figures.downtime_by_reason.items(), key=lambda item: -item[1]["minutes"]))
    _oee(figures, ideal_time, ideal_cycle is not None or bool(by_work_order))
    return figures


def is_micro_stop(segment: Segment, micro_stop: float) -> bool:
    """A stop shorter than the asset's threshold, whether derivation reported it one by
    one (`micro`) or summarised it. A short segment with a downtime's reason is a part
    of a downtime (an operator split it), not a micro-stop."""
    closed = segment.end is not None and segment.end - segment.start < micro_stop
    return segment.state == "down" and (segment.micro or (closed and segment.reason is None))


def _oee(figures: ShiftFigures, ideal_time: float, has_ideal: bool) -> None:
    seconds = figures.seconds
    run = seconds["running"] + figures.micro_stop_s
    planned = sum(seconds.values()) + figures.micro_stop_s - seconds["planned_stop"] \
        - seconds["no_data"]
    figures.availability = run / planned if planned > 0 else None
    made = figures.good + figures.scrap
    figures.quality = figures.good / made if made else None
    if has_ideal and run > 0:
        figures.performance = min(1.0, ideal_time / run)
    a, p, q = figures.availability, figures.performance, figures.quality
    if a is not None and p is not None and q is not None:
        figures.oee = a * p * q


def _overlap(start: float, end: float, since: float, until: float) -> float:
    """The share of [start, end] inside [since, until]; a point interval counts whole."""
    if end <= start:
        return 1.0 if since <= end <= until else 0.0
    inside = min(end, until) - max(start, since)
    return max(0.0, inside) / (end - start)


def _cycle(work_order: str | None, ideal: float | None,
           by_work_order: dict[str, float]) -> float | None:
    for pattern, cycle in by_work_order.items():
        if work_order is not None and fnmatch.fnmatchcase(work_order, pattern):
            return cycle
    return ideal
