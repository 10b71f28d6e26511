"""Production confirmations: per interval, at shift starts, when the work order changes,
and at a clean stop; each with what was made since the last one and the order's totals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..shared import Sample
from .counters import take_held_back
from .emit import Emitter, as_text, iso
from .spec import AssetSpec
from .state import AssetState


def on_production_lot(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                       out: Emitter) -> None:
    st.production_lot = as_text(s.value)


def on_work_order(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                   out: Emitter) -> None:
    order = as_text(s.value)
    if order == st.work_order:
        return
    gap = None
    if s.after_gap and st.work_order is not None:
        # The order changed while we could not see: how the gap's parts split between the
        # two orders is unknowable. They go to the old one, and both say so.
        gap = {"from": iso(st.last_seen_at if st.last_seen_at is not None else s.source_time),
               "to": iso(s.source_time)}
        st.pending_estimated, st.pending_gap = True, gap
    if st.work_order is not None or st.totals_work_order is not None:
        confirm(spec, st, now, out, "work_order_change")  # what came before is the old order's
    st.work_order = order
    st.totals_work_order = order
    st.totals = {"good": 0, "scrap": 0}
    if gap is not None:
        st.pending_estimated, st.pending_gap = True, gap  # the new order's first one too


def confirm(spec: AssetSpec, st: AssetState, now: float, out: Emitter, trigger: str) -> None:
    good, scrap = st.pending["good"], st.pending["scrap"]
    summarise = spec.micro_stops == "summarize"
    # An estimated quantity is sent even when it is zero: "we could not see" must reach the ERP.
    # So is the last word on a work order that made anything: the ERP may close the order
    # on it, even when nothing was made since the previous confirmation.
    closing = trigger == "work_order_change" and any(st.totals.values())
    if (good or scrap or st.pending_estimated or (summarise and st.micro_stops) or closing
            or st.held_back):
        st.totals["good"] += good
        st.totals["scrap"] += scrap
        data: dict[str, Any] = {
            "work_order": st.totals_work_order,
            "good": good,
            "scrap": scrap,
            "good_total": st.totals["good"],
            "scrap_total": st.totals["scrap"],
            "unit": spec.unit,
            "interval_start": iso(st.interval_start if st.interval_start is not None else now),
            "interval_end": iso(now),
            "estimated": st.pending_estimated,
            "trigger": trigger,
        }
        if st.held_back:
            # Readings no machine could have made: booked as nothing, and said so.
            data["held_back"] = take_held_back(st)
        if st.pending_gap is not None:
            data["gap"] = st.pending_gap
        if spec.production_lot_role is not None:
            data["lot"] = st.lot if spec.production_lot_role == "lot" else st.production_lot
        if summarise:
            data["micro_stops"] = st.micro_stops
            data["micro_stop_s"] = round(st.micro_stop_s, 3)
        out.emit("production.confirmed", now, data)
        st.micro_stops, st.micro_stop_s = 0, 0.0
    st.pending = {"good": 0, "scrap": 0}
    st.pending_estimated, st.pending_gap = False, None
    st.interval_start = now


def last_shift_start(spec: AssetSpec, now: float) -> float:
    """The latest configured shift start at or before `now`, in the asset's time zone.

    Wall-clock times are turned into instants by zoneinfo, so daylight-saving changes are
    right: a start inside the spring-forward gap happens at the instant the clock skips
    to; one in the repeated autumn hour happens at its first occurrence.
    """
    zone = ZoneInfo(spec.timezone)
    today = datetime.fromtimestamp(now, zone).date()
    starts = [datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()
              for day in (today - timedelta(days=1), today) for hour, minute in spec.shifts]
    return max(t for t in starts if t <= now)
