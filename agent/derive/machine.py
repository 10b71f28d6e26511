"""Samples and time in, events and new state out. No I/O, no clock reads.

The transitions of an asset, and where each lives (this module dispatches samples and
ticks to them, and holds machine state, downtime, holds and maintenance itself; counters
are in counters.py, confirmations in production.py, telemetry in telemetry.py):

    machine state   a new code must hold `min_dwell` before it counts, then: state_changed
    downtime        none --enter a down state--> pending
                    pending --past micro_stop--> open (downtime.started, true start time)
                    pending --leave before micro_stop--> none: a micro-stop, reported,
                                                         summarised or ignored as configured
                    open --reason code changes--> open (recorded in reason_changes)
                    open --leave the down states--> none (downtime.ended)
    quality hold    clear --flag set--> held (hold_raised) --flag cleared--> clear (hold_released)
                    held --lot changes--> released for the old lot, raised for the new one
    production      counter deltas accumulate; confirmed every interval, at shift starts, on a
                    work-order change and on a clean stop, with quantities since the last
                    confirmation and work-order totals
    counters        first value = baseline; a drop is a plausible rollover or a reset (policy);
                    what could not be seen (a drop across a gap) is flagged estimated;
                    counters.snapshot with absolute values at an interval
    maintenance     a fault code lasting `fault_persists`, or occurring `fault_repeats` times
                    within `repeat_window`: maintenance.requested
    telemetry       per tag, on change past a deadband, or every interval
    a device        its unbound tags' telemetry and its status: device.py

Within one batch, samples are applied in source-time order. Samples of the same instant
(every tag of one Modbus read) go in role order: context tags (reason, lot, ...) first, then
counters, then the work order and the lot being produced, then state and hold edges, so an
edge always sees the context that came with it. Across batches and devices, arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..events import Event
from ..shared import Sample
from . import telemetry
from .counters import on_counter, rebaseline_changed_counters
from .emit import DeriveContext, Emitter, as_flag, as_int, as_text, iso, round_s
from .production import confirm, last_shift_start, on_production_lot, on_work_order
from .spec import ROLE_ORDER, AssetSpec
from .state import AssetState, OpenDowntime, OpenHold, ReasonChange

UNKNOWN_STATE = "unknown"
__all__ = ["DeriveContext", "apply_samples", "apply_stop", "apply_tick", "last_shift_start"]


# ================================================================== entry points


def apply_samples(spec: AssetSpec, state: AssetState, samples: list[Sample], now: float,
                  ctx: DeriveContext) -> tuple[AssetState, list[Event]]:
    new = state.copy()
    out = Emitter(spec.id, new.sequences, ctx)
    rebaseline_changed_counters(spec, new)
    relevant: list[tuple[str, Sample]] = []
    for sample in samples:
        ref = f"{sample.device}.{sample.tag}"
        if ref in spec.telemetry:
            telemetry.on_sample(spec.telemetry[ref], new.telemetry, ref, sample, out)
        if ref in spec.roles and sample.quality == "good":  # bad quality never moves state
            relevant.append((spec.roles[ref], sample))
        elif spec.roles.get(ref) == "state" and sample.quality == "bad" and (
                new.no_data_since is None):
            # The PLC says its own state value is not valid: the state is not known from
            # here, as when the device goes silent (no event; the history's no data).
            new.no_data_since, new.data_resumed_at = sample.source_time, None
    # In source-time order: one OPC UA publish often carries two PLC scans, and a part
    # counted in the later scan belongs to the work order set in the earlier one. Ties
    # (a Modbus read stamps every tag alike) keep the role order.
    # The first reading after a gap is one instant whatever its timestamps say (an OPC UA
    # value keeps the time it last changed): what changed in the gap cannot be ordered,
    # and the gap's parts stay with the order that was current before it. (A batch is one
    # driver's hand-over, so it holds at most one reconnection's first reading.)
    relevant.sort(key=lambda pair: (not pair[1].after_gap,
                                    0.0 if pair[1].after_gap else pair[1].source_time,
                                    ROLE_ORDER.index(pair[0])))
    # The hold flag as the same scan has it: a lot that changes in the scan that also
    # clears the hold ends that hold, it does not move it to the new lot.
    holds = {s.source_time: as_flag(s.value) for role, s in relevant if role == "hold"}
    for role, sample in relevant:
        out.batch_hold = holds.get(sample.source_time)
        _HANDLERS[role](spec, new, sample, now, out)
    if relevant:
        new.last_seen_at = max(new.last_seen_at or 0.0, *(s.source_time for _, s in relevant))
        if new.no_data_since is not None and any(role == "state" for role, _ in relevant):
            # Data again: the state is known from this first reading on.
            new.data_resumed_at = min(s.source_time for role, s in relevant if role == "state")
            new.no_data_since = None
    _check_timers(spec, new, now, out)
    return new, out.events


def apply_device_loss(spec: AssetSpec, state: AssetState, last_sample_at: float
                      ) -> AssetState:
    """The device holding this asset's state tag stopped delivering; its last reading was
    at `last_sample_at`. No event: the contract's states are the PLC's, and a PLC that
    cannot be read has none. The shift history records the time as no data."""
    if state.no_data_since is not None:
        return state
    new = state.copy()
    new.no_data_since, new.data_resumed_at = last_sample_at, None
    return new


def apply_tick(spec: AssetSpec, state: AssetState, now: float,
               ctx: DeriveContext) -> tuple[AssetState, list[Event]]:
    new = state.copy()
    out = Emitter(spec.id, new.sequences, ctx)
    _check_timers(spec, new, now, out)
    return new, out.events


def apply_stop(spec: AssetSpec, state: AssetState, now: float,
               ctx: DeriveContext) -> tuple[AssetState, list[Event]]:
    """A clean stop confirms what was produced; open downtimes and holds carry on."""
    new = state.copy()
    out = Emitter(spec.id, new.sequences, ctx)
    if new.interval_start is not None:
        confirm(spec, new, now, out, "stop")
    return new, out.events


# ================================================================== context


def _on_reason(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: Emitter) -> None:
    code = as_int(s.value)
    previous, st.reason_code = st.reason_code, code
    if st.down_since is not None and st.downtime is None and code:
        # Down, not yet a downtime: the first code is its reason, later ones changes.
        last = (st.down_reason_changes[-1].reason_code if st.down_reason_changes
                else st.down_reason)
        if st.down_reason is None:
            st.down_reason = code
        elif code != last:
            st.down_reason_changes.append(
                ReasonChange(s.source_time, code, _reason_text(spec, code)))
    downtime = st.downtime
    if downtime is not None and code:
        current = downtime.reason_changes[-1].reason_code if downtime.reason_changes \
            else downtime.reason_code
        if not downtime.reason_code and not downtime.reason_changes:
            # A fault code often lands a poll after the state: fill in the unknown reason.
            downtime.reason_code, downtime.reason = code, _reason_text(spec, code)
        elif code != current:
            downtime.reason_changes.append(
                ReasonChange(s.source_time, code, _reason_text(spec, code)))
    if code != previous:
        _fault_changed(spec, st, code, s.source_time, now, out)


def _on_lot(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: Emitter) -> None:
    lot = as_text(s.value)
    hold = st.hold
    if hold is not None and lot != hold.lot and out.batch_hold is not False:
        # The material under hold changed: the old lot's hold ends, the new lot's begins.
        _release_hold(st, s.source_time, out)
        st.lot = lot
        _raise_hold(st, s.source_time, out)
    st.lot = lot


def _on_hold_reason(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                    out: Emitter) -> None:
    code = as_int(s.value)
    if code is not None:
        st.hold_reason = spec.hold_reason_texts.get(code, str(code)) if code else None
    else:
        st.hold_reason = as_text(s.value)


def _on_hold_quantity(spec: AssetSpec, st: AssetState, s: Sample, now: float,
                      out: Emitter) -> None:
    is_number = isinstance(s.value, int | float) and not isinstance(s.value, bool)
    quantity = float(s.value) if is_number else None  # type: ignore[arg-type]
    st.hold_quantity = quantity if quantity is not None and math.isfinite(quantity) else None


# ================================================================== counters


def _on_counter(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: Emitter) -> None:
    on_counter(spec, st, s, now)


# ================================================================== machine state and downtime


def _on_state(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: Emitter) -> None:
    code = as_int(s.value)
    name = spec.state_map.get(code, UNKNOWN_STATE) if code is not None else UNKNOWN_STATE
    estimated = s.after_gap or st.machine_state is None
    if (st.candidate_state not in (None, name) and st.candidate_since is not None
            and s.source_time - st.candidate_since >= spec.min_dwell):
        # The waiting state held long enough before this change arrived (no tick between).
        _enter_candidate(spec, st, out)
    if name == st.machine_state:
        st.state_code = code
        st.candidate_state = None  # a chatter that went back: nothing happened
        return
    if spec.min_dwell <= 0 or st.machine_state is None:
        # The dwell time filters changes; the first state ever seen simply is the state.
        _enter_state(spec, st, name, code, s.source_time, estimated, now, out)
        return
    if st.candidate_state != name:
        st.candidate_state, st.candidate_code = name, code
        st.candidate_since, st.candidate_estimated = s.source_time, estimated
        st.candidate_seen_locally = now
    if st.candidate_since is not None and s.source_time - st.candidate_since >= spec.min_dwell:
        _enter_candidate(spec, st, out)


def _enter_candidate(spec: AssetSpec, st: AssetState, out: Emitter) -> None:
    assert st.candidate_state is not None
    assert st.candidate_since is not None
    _enter_state(spec, st, st.candidate_state, st.candidate_code, st.candidate_since,
                 st.candidate_estimated, st.candidate_seen_locally or st.candidate_since, out)


def _enter_state(spec: AssetSpec, st: AssetState, name: str, code: int | None, at: float,
                 estimated: bool, seen_locally: float, out: Emitter) -> None:
    previous, since = st.machine_state, st.state_since
    out.emit("machine.state_changed", at, {
        "state": name,
        "previous_state": previous,
        "previous_duration_s": round_s(at - since) if since is not None else None,
        "code": code,
    })
    was_down = previous in spec.down_states
    is_down = name in spec.down_states
    if is_down and not was_down:
        st.down_since, st.down_since_estimated = at, estimated
        st.down_seen_locally = seen_locally
        st.down_reason, st.down_reason_changes = st.reason_code or None, []
    elif was_down and not is_down:
        _leave_down(spec, st, at, estimated and previous is not None, out)
    st.machine_state, st.state_code, st.state_since = name, code, at
    st.candidate_state = st.candidate_code = st.candidate_since = None
    st.candidate_seen_locally = None
    if is_down and not was_down and spec.micro_stop <= 0:
        _start_downtime(spec, st, out)


def _leave_down(spec: AssetSpec, st: AssetState, at: float, end_estimated: bool,
                out: Emitter) -> None:
    if st.downtime is None and st.down_since is not None:
        if at - st.down_since >= spec.micro_stop:
            _start_downtime(spec, st, out)  # long enough but seen late: report it whole
        else:
            _micro_stop(spec, st, at, out)
    if st.downtime is not None:
        dt = st.downtime
        out.emit("downtime.ended", at, {
            "downtime_id": dt.id,
            "started_at": iso(dt.started_at),
            "ended_at": iso(at),
            "duration_s": round_s(at - dt.started_at),
            "reason_code": dt.reason_code,
            "reason": dt.reason,
            "work_order": dt.work_order,
            "start_estimated": dt.start_estimated,
            "end_estimated": end_estimated,
            "reason_changes": [{"at": iso(c.at), "reason_code": c.reason_code,
                                "reason": c.reason} for c in dt.reason_changes],
            # Who gave the reason at the line page while the stop went on; None: the PLC.
            "classified_by": dt.classified_by,
        })
    st.downtime = None
    st.down_since = None
    st.down_seen_locally = None
    st.down_reason, st.down_reason_changes = None, []


def _micro_stop(spec: AssetSpec, st: AssetState, at: float, out: Emitter) -> None:
    assert st.down_since is not None
    duration = at - st.down_since
    if spec.micro_stops == "summarize":
        st.micro_stops += 1
        st.micro_stop_s += duration
    elif spec.micro_stops == "report":
        out.emit("downtime.micro_stop", st.down_since, {
            "started_at": iso(st.down_since),
            "ended_at": iso(at),
            "duration_s": round_s(duration),
            "reason_code": st.down_reason,
            "reason": _reason_text(spec, st.down_reason),
            "work_order": st.work_order,
        })


def _start_downtime(spec: AssetSpec, st: AssetState, out: Emitter) -> None:
    assert st.down_since is not None
    event_id = out.ctx.new_id()
    # The fault at the stop's start, not the code now: it may have cleared in the very
    # scan that ended a stop only just past micro_stop, or before an agent restart.
    st.downtime = OpenDowntime(
        id=event_id, started_at=st.down_since, start_estimated=st.down_since_estimated,
        reason_code=st.down_reason, reason=_reason_text(spec, st.down_reason),
        work_order=st.work_order, reason_changes=list(st.down_reason_changes),
    )
    out.emit("downtime.started", st.down_since, {
        "downtime_id": event_id,
        "started_at": iso(st.down_since),
        "reason_code": st.downtime.reason_code,
        "reason": st.downtime.reason,
        "work_order": st.work_order,
        "start_estimated": st.down_since_estimated,
    }, event_id=event_id)


# ================================================================== maintenance


def _fault_changed(spec: AssetSpec, st: AssetState, code: int | None, at: float, now: float,
                   out: Emitter) -> None:
    st.fault_requested = False
    if not code:
        st.fault_since = st.fault_seen_locally = None
        return
    st.fault_since, st.fault_seen_locally = at, now
    if spec.fault_repeats is None:
        return
    history = [t for t in st.fault_history.get(str(code), []) if at - t < spec.repeat_window]
    history.append(at)
    st.fault_history[str(code)] = history
    if len(history) >= spec.fault_repeats:
        _request_maintenance(spec, st, code, len(history), history[0], "repeats", out, at)
        st.fault_history[str(code)] = []  # the next request needs as many new occurrences
    # Keep the history small: codes whose window has passed are forgotten.
    st.fault_history = {c: ts for c, ts in st.fault_history.items()
                        if ts and at - ts[-1] < spec.repeat_window}


def _request_maintenance(spec: AssetSpec, st: AssetState, code: int, occurrences: int,
                         first_seen: float, trigger: str, out: Emitter, at: float) -> None:
    out.emit("maintenance.requested", at, {
        "fault_code": code,
        "reason": _reason_text(spec, code),
        "occurrences": occurrences,
        "first_seen": iso(first_seen),
        "work_order": st.work_order,
        "trigger": trigger,
    })


# ================================================================== timers


def _check_timers(spec: AssetSpec, st: AssetState, now: float, out: Emitter) -> None:
    if st.candidate_state is not None and st.candidate_seen_locally is not None and (
            now - st.candidate_seen_locally >= spec.min_dwell):
        _enter_candidate(spec, st, out)
    pending = st.downtime is None and st.down_since is not None
    if pending and st.down_seen_locally is not None and (
            now - st.down_seen_locally >= spec.micro_stop) and not _leaving_too_soon(spec, st):
        _start_downtime(spec, st, out)
    if (spec.fault_persists is not None and st.reason_code and not st.fault_requested
            and st.fault_seen_locally is not None and st.fault_since is not None
            and now - st.fault_seen_locally >= spec.fault_persists):
        occurrences = len(st.fault_history.get(str(st.reason_code), [])) or 1
        _request_maintenance(spec, st, st.reason_code, occurrences, st.fault_since, "persists",
                             out, now)
        st.fault_requested = True
    if spec.shifts:
        boundary = last_shift_start(spec, now)
        if st.last_shift_boundary is None:
            st.last_shift_boundary = boundary
        elif boundary > st.last_shift_boundary:
            st.last_shift_boundary = boundary
            if st.interval_start is not None:
                confirm(spec, st, now, out, "shift_change")
    if st.interval_start is not None and now - st.interval_start >= spec.interval:
        confirm(spec, st, now, out, "interval")
    if spec.snapshot_interval and st.counter_last and (
            st.last_snapshot is None or now - st.last_snapshot >= spec.snapshot_interval):
        out.emit("counters.snapshot", now, {"counters": dict(st.counter_last),
                                            "work_order": st.work_order})
        st.last_snapshot = now
    telemetry.on_tick(spec.timed_telemetry, st.telemetry, now, out)


def _leaving_too_soon(spec: AssetSpec, st: AssetState) -> bool:
    """A change out of the down states is waiting out its dwell time, and if it holds, the
    stop will have been shorter than a micro-stop: wait for the verdict, start nothing."""
    leaving = st.candidate_state is not None and st.candidate_state not in spec.down_states
    return (leaving and st.candidate_since is not None and st.down_since is not None
            and st.candidate_since - st.down_since < spec.micro_stop)


# ================================================================== quality hold


def _on_hold(spec: AssetSpec, st: AssetState, s: Sample, now: float, out: Emitter) -> None:
    active = as_flag(s.value)
    st.hold_active = active
    if active and st.hold is None:
        _raise_hold(st, s.source_time, out)
    elif not active and st.hold is not None:
        _release_hold(st, s.source_time, out)


def _raise_hold(st: AssetState, at: float, out: Emitter) -> None:
    hold_id = out.ctx.new_id()
    st.hold = OpenHold(id=hold_id, raised_at=at, lot=st.lot, reason=st.hold_reason,
                       quantity=st.hold_quantity, work_order=st.work_order)
    out.emit("quality.hold_raised", at, _hold_data(st.hold), event_id=hold_id)


def _release_hold(st: AssetState, at: float, out: Emitter) -> None:
    assert st.hold is not None
    data = _hold_data(st.hold)
    data["raised_at"] = iso(st.hold.raised_at)
    out.emit("quality.hold_released", at, data)
    st.hold = None


def _hold_data(hold: OpenHold) -> dict[str, Any]:
    return {"hold_id": hold.id, "lot": hold.lot, "reason": hold.reason,
            "quantity": hold.quantity, "work_order": hold.work_order}


# ================================================================== dispatch and helpers

_HANDLERS: dict[str, Callable[[AssetSpec, AssetState, Sample, float, Emitter], None]] = {
    "reason": _on_reason,
    "lot": _on_lot,
    "hold_reason": _on_hold_reason,
    "hold_quantity": _on_hold_quantity,
    "good": _on_counter,
    "scrap": _on_counter,
    "work_order": on_work_order,
    "production_lot": on_production_lot,
    "state": _on_state,
    "hold": _on_hold,
}


def _reason_text(spec: AssetSpec, code: int | None) -> str:
    if not code:
        return spec.default_reason
    return spec.reason_texts.get(code, f"code {code}")
