"""The body of `floorlink.shift.completed.v1`, from a shift's figures.

Exact in the sense production confirmations are: what the agent saw is counted as it
happened. Where the agent was not running (a restart inside the shift, or it came up
after the shift began) the history holds the state it last knew, assumed to have gone
on; the event then says `estimated: true` and lists those `gaps`.
"""

from __future__ import annotations

from typing import Any

from ..events import format_time
from .figures import ShiftFigures


def shift_report(figures: ShiftFigures, gaps: list[tuple[float, float]]) -> dict[str, Any]:
    seconds = figures.seconds
    return {
        "shift": {"start": format_time(figures.start), "end": format_time(figures.end),
                  "label": figures.label},
        "oee": _ratio(figures.oee), "availability": _ratio(figures.availability),
        "performance": _ratio(figures.performance), "quality": _ratio(figures.quality),
        "run_s": round(seconds["running"] + figures.micro_stop_s, 1),
        "down_s": round(seconds["down"], 1),
        "idle_s": round(seconds["idle"], 1),
        "setup_s": round(seconds["setup"], 1),
        "planned_stop_s": round(seconds["planned_stop"], 1),
        "unknown_s": round(seconds["unknown"], 1),
        "no_data_s": round(seconds["no_data"], 1),
        "micro_stop_s": round(figures.micro_stop_s, 1),
        "good": figures.good,
        "scrap": figures.scrap,
        "downtime_by_reason": [
            {"reason": reason, "minutes": round(entry["minutes"], 2),
             "count": int(entry["count"])}
            for reason, entry in figures.downtime_by_reason.items()],
        "estimated": bool(gaps),
        "gaps": [{"from": format_time(start), "to": format_time(end)} for start, end in gaps],
    }


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
