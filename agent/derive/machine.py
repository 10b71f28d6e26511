"""Samples and time in, events and new asset state out. No I/O, no clock reads.

Every transition of an asset lives in this module:

    machine state   any --code maps to another state--> state_changed
    downtime        none --enter down--> pending --past micro-stop--> open (downtime.started)
                    pending --leave down before threshold--> none   (a micro-stop: no downtime)
                    open --leave down--> none (downtime.ended)
    quality hold    clear --flag set--> held (hold_raised) --flag cleared--> clear (hold_released)
    production      counter deltas accumulate; confirmed every interval and on a work-order
                    change, with quantities since the last confirmation and work-order totals

Within one batch, context tags (reason, lot, ...) are applied first, then counters, then the
work order, then state and hold edges, so an edge always sees the context that came with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.base import Sample

from ..events import EVENT_LANES, Event, format_time, new_event_id, source_uri
from .spec import ROLE_ORDER, AssetSpec
from .state import AssetState, OpenDowntime, OpenHold

UNKNOWN_STATE = "unknown"
ROLLOVER_MIN_STEP = 10


@dataclass(frozen=True)
class DeriveContext:
    site: str
    agent: str
    epoch: int
    new_id: Callable[[], str] = new_event_id


class _Emitter:
    def __init__(self, spec: AssetSpec, state: AssetState, ctx: DeriveContext) -> None:
        self.spec, self.state, self.ctx = spec, state, ctx
        self.events: list[Event] = []
        self.source = source_uri(ctx.site, ctx.agent, spec.id)

    def emit(self, short_type: str, time: float, data: dict[str, Any],
             event_id: str | None = None) -> Event:
        lane = EVENT_LANES[short_type]
        sequence = self.state.sequences.get(lane.label, 0) + 1
        self.state.sequences[lane.label] = sequence
        event = Event(
            id=event_id or self.ctx.new_id(), type=short_type, source=self.source,
            subject=self.spec.id, time=time, lane=lane, sequence=sequence,
            epoch=self.ctx.epoch, data=data,
        )
        self.events.append(event)
        return event


def apply_samples(spec: AssetSpec, state: AssetState, samples: list[Sample], now: float,
                  ctx: DeriveContext) -> tuple[AssetState, list[Event]]:
    new = state.copy()
    out = _Emitter(spec, new, ctx)
    relevant = [(spec.roles[f"{s.device}.{s.tag}"], s) for s in samples
                if f"{s.device}.{s.tag}" in spec.roles and s.quality == "good"]
    relevant.sort(key=lambda pair: ROLE_ORDER.index(pair[0]))
    for role, sample in relevant:
        _HANDLERS[role](spec, new, sample, now, out)
    _check_timers(spec, new, now, out)
    return new, out.events


def apply_tick(spec: AssetSpec, state: AssetState, now: float,
               ctx: DeriveContext) -> tuple[AssetState, list[Event]]:
    new = state.copy()
    out = _Emitter(spec, new, ctx)
    _check_timers(spec, new, now, out)
    return new, out.events


# ------------------------------------------------------------------ context


def _on_reason(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: _Emitter) -> None:
    code = _as_int(s.value)
    st.reason_code = code
    # A fault code often lands a poll after the state: fill in an unknown reason, keep a known one.
    if st.downtime and not st.downtime.reason_code and code:
        st.downtime.reason_code = code
        st.downtime.reason = _reason_text(spec, code)


def _on_lot(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: _Emitter) -> None:
    st.lot = _as_text(s.value)


def _on_hold_reason(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                    out: _Emitter) -> None:
    code = _as_int(s.value)
    if code is not None:
        st.hold_reason = spec.hold_reason_texts.get(code, str(code)) if code else None
    else:
        st.hold_reason = _as_text(s.value)


def _on_hold_quantity(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                      out: _Emitter) -> None:
    st.hold_quantity = float(s.value) if isinstance(s.value, int | float) else None


# ------------------------------------------------------------------ counters


def _on_counter(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: _Emitter) -> None:
    role = spec.roles[f"{s.device}.{s.tag}"]
    value = _as_int(s.value)
    if value is None:
        return
    last = st.counter_last.get(role)
    st.counter_last[role] = value
    if st.interval_start is None:
        st.interval_start = now
    if last is None:
        return  # the first value is a baseline: what was produced before it is not ours to count
    if value >= last:
        delta = value - last
        if not s.after_gap:
            st.counter_max_step[role] = max(st.counter_max_step.get(role, 0), delta)
    else:
        # A drop is a rollover only if the increment it implies is plausible, i.e. close
        # to the steps seen so far; otherwise the PLC reset its count to zero.
        modulus = spec.counter_modulus.get(role)
        plausible = max(4 * st.counter_max_step.get(role, 0), ROLLOVER_MIN_STEP)
        if not s.after_gap and modulus and modulus - last + value <= plausible:
            delta = modulus - last + value  # rollover seen: exact
        else:
            delta = value  # reset to zero seen: exact
        if s.after_gap:
            st.pending_estimated = True  # whatever happened in the gap, we did not see it
    st.pending[role] += delta * spec.parts_per_cycle


def _on_work_order(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                   out: _Emitter) -> None:
    order = _as_text(s.value)
    if order == st.work_order:
        return
    if st.work_order is not None or st.totals_work_order is not None:
        _confirm(spec, st, now, out)
    st.work_order = order
    st.totals_work_order = order
    st.totals = {"good": 0, "scrap": 0}


def _confirm(spec: AssetSpec, st: AssetState, now: float, out: _Emitter) -> None:
    good, scrap = st.pending["good"], st.pending["scrap"]
    if good or scrap:
        st.totals["good"] += good
        st.totals["scrap"] += scrap
        out.emit("production.confirmed", now, {
            "work_order": st.totals_work_order,
            "good": good,
            "scrap": scrap,
            "good_total": st.totals["good"],
            "scrap_total": st.totals["scrap"],
            "unit": spec.unit,
            "interval_start": _iso(st.interval_start if st.interval_start is not None else now),
            "interval_end": _iso(now),
            "estimated": st.pending_estimated,
        })
    st.pending = {"good": 0, "scrap": 0}
    st.pending_estimated = False
    st.interval_start = now


# ------------------------------------------------------------------ machine state and downtime


def _on_state(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: _Emitter) -> None:
    code = _as_int(s.value)
    name = spec.state_map.get(code, UNKNOWN_STATE) if code is not None else UNKNOWN_STATE
    if name == st.machine_state:
        st.state_code = code
        return
    previous, since = st.machine_state, st.state_since
    out.emit("machine.state_changed", s.source_time, {
        "state": name,
        "previous_state": previous,
        "previous_duration_s": _round(s.source_time - since) if since is not None else None,
        "code": code,
    })
    was_down = previous in spec.down_states
    is_down = name in spec.down_states
    if is_down and not was_down:
        st.down_since = s.source_time
        st.down_since_estimated = s.after_gap or previous is None
        st.down_seen_locally = now
    elif was_down and not is_down:
        _leave_down(spec, st, s, out)
    st.machine_state, st.state_code, st.state_since = name, code, s.source_time


def _leave_down(spec: AssetSpec, st: AssetState, s: Sample, out: _Emitter) -> None:
    long_enough = st.down_since is not None and s.source_time - st.down_since >= spec.micro_stop
    if st.downtime is None and long_enough:
        _start_downtime(spec, st, out)  # long enough but seen late: report it whole
    if st.downtime is not None:
        dt = st.downtime
        out.emit("downtime.ended", s.source_time, {
            "downtime_id": dt.id,
            "started_at": _iso(dt.started_at),
            "ended_at": _iso(s.source_time),
            "duration_s": _round(s.source_time - dt.started_at),
            "reason_code": dt.reason_code,
            "reason": dt.reason,
            "work_order": dt.work_order,
            "start_estimated": dt.start_estimated,
            "end_estimated": s.after_gap,
        })
    st.downtime = None
    st.down_since = None
    st.down_seen_locally = None


def _start_downtime(spec: AssetSpec, st: AssetState, out: _Emitter) -> None:
    assert st.down_since is not None
    event_id = out.ctx.new_id()
    st.downtime = OpenDowntime(
        id=event_id, started_at=st.down_since, start_estimated=st.down_since_estimated,
        reason_code=st.reason_code or None, reason=_reason_text(spec, st.reason_code),
        work_order=st.work_order,
    )
    out.emit("downtime.started", st.down_since, {
        "downtime_id": event_id,
        "started_at": _iso(st.down_since),
        "reason_code": st.downtime.reason_code,
        "reason": st.downtime.reason,
        "work_order": st.work_order,
        "start_estimated": st.down_since_estimated,
    }, event_id=event_id)


def _check_timers(spec: AssetSpec, st: AssetState, now: float, out: _Emitter) -> None:
    pending = st.downtime is None and st.down_since is not None
    if pending and st.down_seen_locally is not None and (
            now - st.down_seen_locally >= spec.micro_stop):
        _start_downtime(spec, st, out)
    if st.interval_start is not None and now - st.interval_start >= spec.interval:
        _confirm(spec, st, now, out)


# ------------------------------------------------------------------ quality hold


def _on_hold(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: _Emitter) -> None:
    active = bool(s.value) if not isinstance(s.value, str) else s.value not in ("", "0", "false")
    st.hold_active = active
    if active and st.hold is None:
        hold_id = out.ctx.new_id()
        st.hold = OpenHold(id=hold_id, raised_at=s.source_time, lot=st.lot,
                           reason=st.hold_reason, quantity=st.hold_quantity,
                           work_order=st.work_order)
        out.emit("quality.hold_raised", s.source_time, _hold_data(st.hold), event_id=hold_id)
    elif not active and st.hold is not None:
        data = _hold_data(st.hold)
        data["raised_at"] = _iso(st.hold.raised_at)
        out.emit("quality.hold_released", s.source_time, data)
        st.hold = None


def _hold_data(hold: OpenHold) -> dict[str, Any]:
    return {"hold_id": hold.id, "lot": hold.lot, "reason": hold.reason,
            "quantity": hold.quantity, "work_order": hold.work_order}


_HANDLERS: dict[str, Callable[[AssetSpec, AssetState, Sample, float, _Emitter], None]] = {
    "reason": _on_reason,
    "lot": _on_lot,
    "hold_reason": _on_hold_reason,
    "hold_quantity": _on_hold_quantity,
    "good": _on_counter,
    "scrap": _on_counter,
    "work_order": _on_work_order,
    "state": _on_state,
    "hold": _on_hold,
}


# ------------------------------------------------------------------ helpers


def _reason_text(spec: AssetSpec, code: int | None) -> str:
    if not code:
        return spec.default_reason
    return spec.reason_texts.get(code, f"code {code}")


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00")
    return text or None


def _round(seconds: float) -> float:
    return round(seconds, 3)


_iso = format_time
