"""What a device itself says: the telemetry of tags no asset uses, and whether it delivers.

`device.status` events travel in the telemetry lane, ordered with the device's telemetry:
a consumer (the Sparkplug uplink's DDEATH and DBIRTH among them) sees a device go offline
after its last values and come back before its first new ones.
"""

from __future__ import annotations

from ..events import Event
from ..shared import Sample
from . import telemetry
from .emit import DeriveContext, Emitter, iso, round_s
from .spec import DeviceSpec
from .state import DeviceState


def apply_device_samples(spec: DeviceSpec, state: DeviceState, samples: list[Sample],
                         now: float, ctx: DeriveContext) -> tuple[DeviceState, list[Event]]:
    """Telemetry of tags no asset uses; the device is the subject."""
    new = state.copy()
    out = Emitter(spec.id, new.sequences, ctx)
    for sample in samples:
        ref = f"{sample.device}.{sample.tag}"
        if ref in spec.telemetry:
            telemetry.on_sample(spec.telemetry[ref], new.telemetry, ref, sample, out)
    telemetry.on_tick(spec.timed_telemetry, new.telemetry, now, out)
    if not samples and not out.events:
        return state, []  # timers change a memory only when they publish: nothing changed
    return new, out.events


def apply_device_tick(spec: DeviceSpec, state: DeviceState, now: float,
                      ctx: DeriveContext) -> tuple[DeviceState, list[Event]]:
    return apply_device_samples(spec, state, [], now, ctx)


def apply_device_offline(spec: DeviceSpec, state: DeviceState, last_sample_at: float,
                         now: float, ctx: DeriveContext) -> tuple[DeviceState, list[Event]]:
    """The device stopped delivering (its driver said so). Once per outage: a device that
    stays down across an agent restart is not reported again."""
    if state.offline_since is not None:
        return state, []
    new = state.copy()
    new.offline_since = last_sample_at
    out = Emitter(spec.id, new.sequences, ctx)
    out.emit("device.status", now, {"device": spec.id, "status": "offline",
                                    "last_sample_at": iso(last_sample_at), "offline_s": None})
    return new, out.events


def apply_device_online(spec: DeviceSpec, state: DeviceState, first: Sample,
                        ctx: DeriveContext) -> tuple[DeviceState, list[Event]]:
    """The first values after an outage; `first` is the earliest of them."""
    since = state.offline_since
    if since is None:
        return state, []
    new = state.copy()
    new.offline_since = None
    out = Emitter(spec.id, new.sequences, ctx)
    out.emit("device.status", first.source_time, {
        "device": spec.id, "status": "online", "last_sample_at": iso(since),
        "offline_s": round_s(max(0.0, first.source_time - since))})
    return new, out.events
