"""Per asset, the current shift and the one before: figures and the timeline's segments,
read from the buffer's history. The app refreshes it every SHIFT_REFRESH seconds; the
status page, /status and /metrics read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buffer.history import parts, segments

from .figures import ShiftFigures, compute, is_micro_stop
from .windows import Window, previous, shift_at

if TYPE_CHECKING:
    from buffer import Outbox
    from buffer.history import Segment

    from ..derive import AssetSpec

SHIFT_REFRESH = 10.0


def shift_of(spec: AssetSpec, at: float) -> Window:
    """The asset's shift that holds `at`."""
    return shift_at(at, _starts(spec), spec.timezone)


def shift_before(spec: AssetSpec, window: Window) -> Window:
    return previous(window, _starts(spec), spec.timezone)


async def figures_for(outbox: Outbox, spec: AssetSpec, window: Window, now: float
                      ) -> tuple[ShiftFigures, list[Segment]]:
    """A shift's figures (up to `now`), and the history segments they come from."""
    until = min(now, window.end)
    history = await segments(outbox, spec.id, window.start, until)
    made = await parts(outbox, spec.id, window.start, until)
    figures = compute(window, now, history, made, ideal_cycle=spec.ideal_cycle,
                      by_work_order=spec.ideal_by_work_order,
                      parts_per_cycle=spec.parts_per_cycle, micro_stop=spec.micro_stop)
    return figures, history


async def shift_views(outbox: Outbox, specs: list[AssetSpec], now: float) -> dict[str, Any]:
    views: dict[str, Any] = {}
    for spec in specs:
        current = shift_of(spec, now)
        views[spec.id] = {"current": await _one(outbox, spec, current, now),
                          "previous": await _one(outbox, spec, shift_before(spec, current),
                                                 now)}
    return views


async def _one(outbox: Outbox, spec: AssetSpec, window: Window, now: float) -> dict[str, Any]:
    figures, history = await figures_for(outbox, spec, window, now)
    until = min(now, window.end)
    view = figures.view()
    view["until"] = until
    view["timeline"] = []
    for segment in history:
        start = max(segment.start, window.start)
        end = min(segment.end if segment.end is not None else until, until)
        if end <= start:
            continue
        view["timeline"].append({
            "start": start, "end": end,
            "state": "micro_stop" if is_micro_stop(segment, spec.micro_stop)
            else segment.state,
            "reason": segment.reason, "work_order": segment.work_order})
    return view


def _starts(spec: AssetSpec) -> list[str]:
    return [f"{hour:02d}:{minute:02d}" for hour, minute in spec.shifts]
