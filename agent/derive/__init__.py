"""Pure event derivation: (spec, state, samples, now) -> (state, events)."""

from .machine import DeriveContext, apply_samples, apply_tick
from .spec import AssetSpec, compile_assets
from .state import AssetState

__all__ = ["AssetSpec", "AssetState", "DeriveContext", "apply_samples", "apply_tick",
           "compile_assets"]
