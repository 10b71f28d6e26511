"""Pure event derivation: (spec, state, samples, now) -> (state, events)."""

from .machine import (
    DeriveContext,
    apply_device_loss,
    apply_device_samples,
    apply_device_tick,
    apply_samples,
    apply_stop,
    apply_tick,
)
from .spec import AssetSpec, DeviceSpec, compile_assets, compile_devices
from .state import AssetState, DeviceState

__all__ = ["AssetSpec", "AssetState", "DeriveContext", "DeviceSpec", "DeviceState",
           "apply_device_loss", "apply_device_samples", "apply_device_tick", "apply_samples",
           "apply_stop", "apply_tick", "compile_assets", "compile_devices"]
