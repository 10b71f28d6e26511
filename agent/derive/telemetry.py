"""Raw values as telemetry events: on change past a deadband, every interval, or a
change held back by min_interval. Memories are copied on write (see state.py)."""

from __future__ import annotations

import math
from typing import Any

from ..shared import Sample
from .emit import Emitter
from .spec import TelemetryPolicy
from .state import TelemetryMemory


def writable_memory(memory: dict[str, TelemetryMemory], ref: str) -> TelemetryMemory:
    """The memory of `ref`, safe to change: the committed state shares the original."""
    old = memory.get(ref)
    mem = memory[ref] = old.clone() if old is not None else TelemetryMemory()
    return mem


def on_sample(policy: TelemetryPolicy, memory: dict[str, TelemetryMemory], ref: str,
                         s: Sample, out: Emitter) -> None:
    old = memory.get(ref)  # writable_memory, inlined: this runs for every value of a scan
    mem = memory[ref] = old.clone() if old is not None else TelemetryMemory()
    mem.seen, mem.value, mem.quality = True, s.value, s.quality
    if not policy.on_change:
        return
    if mem.published and mem.published_quality == s.quality and not _moved(
            policy, mem.published_value, s.value):
        mem.held_back = False
        return
    if policy.min_interval and mem.published and mem.published_at is not None and (
            s.source_time - mem.published_at < policy.min_interval):
        mem.held_back = True  # goes out when min_interval has passed, if still different
        return
    _publish(mem, ref, s.value, s.quality, s.source_time, out)
    mem.published_at, mem.held_back = s.source_time, False


def on_tick(policies: dict[str, TelemetryPolicy], memory: dict[str, TelemetryMemory],
                      now: float, out: Emitter) -> None:
    for ref, policy in policies.items():  # the timed ones: see TelemetryPolicy.timed
        mem = memory.get(ref)
        if mem is None or not mem.seen:
            continue
        if mem.held_back and mem.published_at is not None and (
                now - mem.published_at >= policy.min_interval):
            mem = writable_memory(memory, ref)
            _publish(mem, ref, mem.value, mem.quality, now, out)  # the change held back
            mem.published_at, mem.held_back = now, False
        if policy.every is None:
            continue
        if mem.every_at is None or now - mem.every_at >= policy.every:
            mem = writable_memory(memory, ref)
            _publish(mem, ref, mem.value, mem.quality, now, out)
            mem.every_at = now


def _publish(mem: TelemetryMemory, ref: str, value: Any, quality: str, at: float,
             out: Emitter) -> None:
    device, _, tag = ref.partition(".")
    data = {"tag": ref, "device": device, "name": tag, "value": value, "quality": quality}
    if type(value) is not int and _non_finite(value):  # an int is always finite
        # JSON has no NaN or Infinity: a strict receiver would refuse the whole event.
        data.update(value=None, quality="bad", quality_reason="not finite")
    out.telemetry(at, data)
    mem.published, mem.published_value, mem.published_quality = True, value, quality


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


_PLAIN_NUMBERS = (int, float)  # exactly these: bool is an int, and a flag is not a number


def _moved(policy: TelemetryPolicy, old: Any, new: Any) -> bool:
    # Exact type tests, not isinstance over a generator: this runs for every value of
    # every scan (a quarter of batch derivation's time, profiled).
    numbers = (type(old) in _PLAIN_NUMBERS and type(new) in _PLAIN_NUMBERS) or all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
    if not numbers:
        return bool(old != new)
    both_ints = type(old) is int and type(new) is int  # Modbus registers: no NaN to look for
    if not both_ints and (_non_finite(old) or _non_finite(new)):
        # NaN differs from everything, itself included: compare the kind instead.
        same = old == new or (math.isnan(old) and math.isnan(new))
        return not same
    change = abs(new - old)
    if policy.deadband is not None and change <= policy.deadband:
        return False
    if policy.deadband_percent is not None:
        if old == 0:
            return bool(new != 0)
        return bool(change / abs(old) * 100 > policy.deadband_percent)
    return bool(change > 0)
