"""Pure event derivation: (spec, state, samples, now) -> (state, events)."""

from .device import (
    apply_device_offline,
    apply_device_online,
    apply_device_samples,
    apply_device_tick,
)
from .machine import DeriveContext, apply_device_loss, apply_samples, apply_stop, apply_tick
from .spec import AssetSpec, DeviceSpec, compile_assets, compile_devices
from .state import AssetState, DeviceState

__all__ = ["AssetSpec", "AssetState", "DeriveContext", "DeviceSpec", "DeviceState",
           "apply_device_loss", "apply_device_offline", "apply_device_online",
           "apply_device_samples", "apply_device_tick", "apply_samples",
           "apply_stop", "apply_tick", "compile_assets", "compile_devices"]
