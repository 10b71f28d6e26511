"""Per asset, the current shift and the one before: figures and the timeline's segments,
read from the buffer's history. The app refreshes it every SHIFT_REFRESH seconds; the
status page, /status and /metrics read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buffer.history import parts, segments

from .figures import compute
from .windows import Window, previous, shift_at

if TYPE_CHECKING:
    from buffer import Outbox

    from ..settings.models import Asset

SHIFT_REFRESH = 10.0


async def shift_views(outbox: Outbox, assets: list[Asset], now: float) -> dict[str, Any]:
    views: dict[str, Any] = {}
    for asset in assets:
        production = asset.production
        current = shift_at(now, production.shifts, production.timezone)
        before = previous(current, production.shifts, production.timezone)
        views[asset.id] = {"current": await _one(outbox, asset, current, now),
                           "previous": await _one(outbox, asset, before, now)}
    return views


async def _one(outbox: Outbox, asset: Asset, window: Window, now: float) -> dict[str, Any]:
    until = min(now, window.end)
    history = await segments(outbox, asset.id, window.start, until)
    made = await parts(outbox, asset.id, window.start, until)
    figures = compute(window, now, history, made, ideal_cycle=asset.oee.ideal_cycle,
                      by_work_order=dict(asset.oee.by_work_order),
                      parts_per_cycle=asset.production.parts_per_cycle,
                      micro_stop=asset.downtime.micro_stop)
    view = figures.view()
    view["until"] = until
    view["timeline"] = [
        {"start": max(s.start, window.start),
         "end": min(s.end if s.end is not None else until, until),
         "state": "micro_stop" if s.state == "down" and (
             s.micro or (s.end is not None and s.end - s.start < asset.downtime.micro_stop))
         else s.state,
         "reason": s.reason, "work_order": s.work_order}
        for s in history if min(s.end if s.end is not None else until, until) > max(
            s.start, window.start)]
    return view
