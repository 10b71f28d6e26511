"""When a shift ends: its figures from the history, made into `shift.completed` by
derivation. Run by the pipeline (the single writer) every few seconds; the event and the
note of which shift was reported are committed together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from buffer.history import gaps, parts, segments

from ..derive.shiftend import apply_shift_end, begin_shift_reports
from .figures import compute
from .report import shift_report
from .windows import previous, shift_at

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
        shifts = [f"{h:02d}:{m:02d}" for h, m in spec.shifts]
        window = shift_at(now, shifts, spec.timezone)
        if state.shift_reported_until is None:
            changed[spec.id] = begin_shift_reports(state, window.start)
            continue
        if state.shift_reported_until >= window.start - SLACK:
            continue
        ended = previous(window, shifts, spec.timezone)
        history = await segments(outbox, spec.id, ended.start, ended.end)
        made = await parts(outbox, spec.id, ended.start, ended.end)
        figures = compute(ended, ended.end, history, made, ideal_cycle=spec.ideal_cycle,
                          by_work_order=spec.ideal_by_work_order,
                          parts_per_cycle=spec.parts_per_cycle, micro_stop=spec.micro_stop)
        report = shift_report(figures, await gaps(outbox, ended.start, ended.end))
        changed[spec.id], produced = apply_shift_end(spec, state, report, ended.end, ctx)
        events.extend(produced)
    return changed, events
