"""Part counters: PLC counter readings into quantities produced, exactly where the
counter was observable, flagged where it was not, and never a number a PLC should
not send.

* The first reading is a baseline. A rise is what was made. A drop is a rollover
  when the type's range is known and the step plausible, else a reset
  (`counters.on_reset`); across a gap, a drop counts only its lower bound, flagged.
* A reading is a count only if it is an integer (a float only when integral and
  below 2**53) inside the type's range. A boolean is not a count.
* A rise beyond what the machine can make in the time since the last reading is
  held back: by default at ten times the fastest rate seen (and at least
  FLOOR_RATE) over the time since the last reading, never under JUMP_FLOOR, so a
  real jump after a long stop still counts; `counters.max_rate` sets the rate
  instead. A held-back reading books nothing and re-baselines the
  counter; the next confirmation carries `held_back`, and the pipeline raises a
  persisted alarm. If the next reading falls back below it, the spike was a glitch:
  the counter re-baselines there, and the parts of that stretch are estimated.
"""

from __future__ import annotations

import math
from typing import Any

from ..events import format_time
from ..shared import Sample
from .spec import AssetSpec
from .state import AssetState

ROLLOVER_MIN_STEP = 10
FLOAT_EXACT = 1 << 53  # above it, a float no longer holds every integer
UNBOUNDED = 1 << 64  # the widest counter a PLC has
JUMP_FLOOR = 1000  # parts: no limit is tighter than this
JUMP_FACTOR = 10  # times the fastest rate seen
FLOOR_RATE = 100.0  # parts per second always believed, before any rate was seen too


def rebaseline_changed_counters(spec: AssetSpec, st: AssetState) -> None:
    """A counter now read from another tag starts afresh: never diff two different tags."""
    for role in ("good", "scrap"):
        tag = spec.counter_tag(role)
        if tag is None:
            continue
        if st.counter_tags.get(role) not in (None, tag):
            st.counter_last.pop(role, None)
            st.counter_max_step.pop(role, None)
            st.counter_max_rate.pop(role, None)
        st.counter_tags[role] = tag


def on_counter(spec: AssetSpec, st: AssetState, s: Sample, now: float) -> None:
    role = spec.roles[f"{s.device}.{s.tag}"]
    modulus = spec.counter_modulus.get(role) or s.wraps_at
    value = count_of(s.value, modulus)
    if value is None:
        # Not a count at all: nothing to baseline on, nothing booked.
        _hold_back(st, s, role, rebaseline=None)
        return
    last = st.counter_last.get(role)
    last_at = st.counter_last_at.get(role)
    if st.interval_start is None:
        st.interval_start = now
    if last is None or last_at is None:
        st.counter_last[role], st.counter_last_at[role] = value, s.source_time
        return  # the first value is a baseline: what was made before it is not ours to count
    elapsed = max(s.source_time - last_at, 0.0)
    if value >= last:
        delta = value - last
        if delta > _jump_limit(spec, st, role, elapsed):
            _hold_back(st, s, role, rebaseline=value)
            return
        if st.counter_suspect.pop(role, False) and delta:
            st.pending_estimated = True  # counted from a reading that may have been a lie
        if not s.after_gap:
            st.counter_max_step[role] = max(st.counter_max_step.get(role, 0), delta)
            if elapsed > 0:
                st.counter_max_rate[role] = max(st.counter_max_rate.get(role, 0.0),
                                                delta / elapsed)
    elif st.counter_suspect.pop(role, False):
        # Back below a held-back spike: that reading was the lie. Start over here.
        st.pending_estimated = True
        delta = 0
    else:
        delta = _counter_drop(spec, st, role, last, value, s.after_gap, modulus)
    st.counter_last[role], st.counter_last_at[role] = value, s.source_time
    st.pending[role] += delta * spec.parts_per_cycle


def count_of(value: object, modulus: int | None) -> int | None:
    """The reading as a counter value, or None if it is no count of this type."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer() or abs(value) >= FLOAT_EXACT:
            return None
        value = int(value)
    if not isinstance(value, int):
        return None
    if value < 0 and modulus and value >= -(modulus // 2):
        value += modulus  # a signed counter past its top: it wraps at 2**n as well
    if value < 0 or value >= (modulus or UNBOUNDED):
        return None
    return value


def take_held_back(st: AssetState) -> list[dict[str, Any]]:
    """What the next confirmation reports as held back; cleared once reported."""
    held, st.held_back = st.held_back, []
    return [{"tag": h["tag"], "value": h["value"], "device": h["device"], "at": h["at"]}
            for h in held]


def new_held_back(before: AssetState, after: AssetState,
                  confirmed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Readings held back by this derivation: still waiting in the state, or already
    reported by a confirmation it made."""
    reported = [h for data in confirmed for h in data.get("held_back", ())]
    return [h for h in [*after.held_back, *reported]
            if not any(h["tag"] == o["tag"] and h["at"] == o["at"] for o in before.held_back)]


def _jump_limit(spec: AssetSpec, st: AssetState, role: str, elapsed: float) -> float:
    if spec.max_rate is not None:
        return max(spec.max_rate * max(elapsed, 1.0), float(ROLLOVER_MIN_STEP))
    rate = max(JUMP_FACTOR * st.counter_max_rate.get(role, 0.0), FLOOR_RATE)
    return max(rate * max(elapsed, 1.0), float(JUMP_FLOOR))


def _hold_back(st: AssetState, s: Sample, role: str, rebaseline: int | None) -> None:
    st.held_back.append({"tag": f"{s.device}.{s.tag}", "device": s.device, "role": role,
                         "value": _shown(s.value), "at": format_time(s.source_time)})
    if rebaseline is not None:
        st.counter_last[role], st.counter_last_at[role] = rebaseline, s.source_time
        st.counter_suspect[role] = True


def _shown(value: object) -> object:
    """The reading as a report can carry it: JSON, and short."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)[:80] if not isinstance(value, str) else value[:80]


def _counter_drop(spec: AssetSpec, st: AssetState, role: str, last: int, value: int,
                  after_gap: bool, modulus: int | None) -> int:
    """How many parts a counter that went from `last` down to `value` stands for."""
    plausible = max(4 * st.counter_max_step.get(role, 0), ROLLOVER_MIN_STEP)
    if after_gap:
        # A reset, or rollovers, happened while we could not see: count the lower bound.
        st.pending_estimated = True
        return value if spec.on_reset != "ignore" else 0
    if modulus and modulus - last + value <= plausible:
        return modulus - last + value  # a rollover, seen: exact
    if spec.on_reset == "ignore":
        st.pending_estimated = True
        return 0
    if spec.on_reset == "estimate" or value > plausible:
        # Policy says so, or the value is too far from zero to be sure it was a reset.
        st.pending_estimated = True
    return value  # a reset to zero, seen: the new value was made since
