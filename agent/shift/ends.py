"""When a shift ends: its figures from the history, made into `shift.completed` by
derivation. Run by the pipeline (the single writer) every few seconds; the event and the
note of which shift was reported are committed together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from buffer.history import gaps

from ..derive.shiftend import apply_shift_end, begin_shift_reports
from .report import shift_report
from .view import figures_for, shift_before, shift_of

if TYPE_CHECKING:
    from buffer import Outbox

    from ..derive import AssetSpec, AssetState, DeriveContext
    from ..events import Event

SLACK = 1e-6


async def shift_ends(outbox: Outbox, specs: list[AssetSpec], states: dict[str, AssetState],
                     now: float, ctx: DeriveContext
                     ) -> tuple[dict[str, AssetState], list[Event]]:
    """New states for the assets whose shift ended (or that start reporting), and the
    events. A shift that ended while the agent was off is reported at the next start;
    of several, the last."""
    changed: dict[str, AssetState] = {}
    events: list[Event] = []
    for spec in specs:
        state = states[spec.id]
        window = shift_of(spec, now)
        if state.shift_reported_until is None:
            changed[spec.id] = begin_shift_reports(state, window.start)
            continue
        if state.shift_reported_until >= window.start - SLACK:
            continue
        ended = shift_before(spec, window)
        figures, _ = await figures_for(outbox, spec, ended, ended.end)
        report = shift_report(figures, await gaps(outbox, ended.start, ended.end))
        changed[spec.id], produced = apply_shift_end(spec, state, report, ended.end, ctx)
        events.extend(produced)
    return changed, events
