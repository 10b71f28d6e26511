"""A backlog in the ERP's words, counted in a real buffer: what Odoo does not have yet, by
kind of record, with the oldest's age; and what it refused, with its reasons."""

from __future__ import annotations

import time
from pathlib import Path

from agent.events import Event, Lane
from agent.status.board import StatusBoard
from agent.status.page import render
from agent.uplinks.base import UplinkHealth
from buffer import Outbox

KINDS = [("downtime.started", Lane.BUSINESS), ("downtime.started", Lane.BUSINESS),
         ("production.confirmed", Lane.BUSINESS), ("quality.hold_raised", Lane.HOLD),
         ("machine.state_changed", Lane.BUSINESS), ("telemetry", Lane.TELEMETRY)]


def event(n: int, kind: str, lane: Lane) -> Event:
    return Event(id=f"e{n}", type=kind, source="floorlink://s/a/press-1", subject="press-1",
                 time=float(n), lane=lane, sequence=n, epoch=1, data={"n": n})


async def test_the_uplink_card_says_what_the_erp_is_missing_and_what_it_refused(
        tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "b.db", ["erp"])
    try:
        await box.commit([event(n, kind, lane) for n, (kind, lane) in enumerate(KINDS)], {})
        refused = [event(90, "production.confirmed", Lane.BUSINESS),
                   event(91, "production.confirmed", Lane.BUSINESS)]
        await box.commit(refused, {})
        for stored in await box.fetch(Lane.BUSINESS, 0, 100):
            if stored.id in ("e90", "e91"):
                await box.dead_letter("erp", stored, "Odoo: the work order WO-7 is done")
        board = StatusBoard(site="plant", agent="edge-1", alive=True)
        board.uplinks = [UplinkHealth("erp", "odoo", "https://erp", connected=False)]
        board.buffer = await box.stats()
    finally:
        await box.close()
    view = board.snapshot()
    uplink = view["uplinks"][0]
    # No forwarder moved the cursor past the two refused ones here: they count as missing
    # too. Telemetry is no ERP record and is not counted.
    assert uplink["missing"].startswith(
        "1 quality hold, 2 downtime starts, 3 production confirmations and 1 state change "
        "not yet in Odoo, oldest ")
    assert uplink["refused"] == ("2 production confirmations refused in Odoo: Odoo: the work "
                                 "order WO-7 is done")
    page = render(view)
    assert "not yet in Odoo" in page
    alarms = {a["key"]: a["message"] for a in view["alarms"]}
    assert "not yet in Odoo" in alarms["uplink.erp.disconnected"]
    assert "2 production confirmations refused in Odoo" in alarms["uplink.erp.dead_letters"]


async def test_the_counts_are_cached_for_ten_seconds_and_the_totals_are_not(
        tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "b.db", ["erp"])
    try:
        await box.commit([event(1, "downtime.started", Lane.BUSINESS)], {})
        first = await box.stats()
        await box.commit([event(2, "downtime.started", Lane.BUSINESS)], {})
        second = await box.stats()
        assert second.backlog["erp"][Lane.BUSINESS] == 2  # fresh
        assert second.impact["erp"]["pending"]["downtime.started"]["count"] == 1  # cached
        assert first.impact == second.impact
        assert box.impact_cache is not None
        box.impact_cache = (time.monotonic() - 11, box.impact_cache[1])
        third = await box.stats()
        assert third.impact["erp"]["pending"]["downtime.started"]["count"] == 2
    finally:
        await box.close()
