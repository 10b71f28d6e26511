"""The shift-end event: a shift's figures, reported once per asset when the shift is over.

The figures come from the shift history (agent/shift/), which the pipeline reads and
passes in; derivation makes the event, numbers it in the asset's business sequence, and
remembers which shift it reported, so that a restart neither repeats nor skips one.
"""

from __future__ import annotations

from typing import Any

from ..events import Event
from .emit import Emitter
from .machine import DeriveContext
from .spec import AssetSpec
from .state import AssetState


def apply_shift_end(spec: AssetSpec, state: AssetState, report: dict[str, Any],
                    shift_end: float, ctx: DeriveContext) -> tuple[AssetState, list[Event]]:
    new = state.copy()
    out = Emitter(spec.id, new.sequences, ctx)
    out.emit("shift.completed", shift_end, report)
    new.shift_reported_until = shift_end
    return new, out.events


def begin_shift_reports(state: AssetState, shift_start: float) -> AssetState:
    """A first start: the shift already running is reported when it ends, its time before
    the agent came up as no data."""
    new = state.copy()
    new.shift_reported_until = shift_start
    return new
