"""The page a technician trusts: the header counts exactly the alarms listed, a PLC that
is down shows "no data", not the state it had, and nothing scrolls sideways on a phone.

Measured before: "2 problems" over a list of one (a device down or a broker away was no
alarm, only a red cell further down); Devices and Uplinks scrolled sideways at 400 px with
the error columns cut off; "press-/1"; a green "running" for an asset whose PLC was
down; `1GB` shown as "953.7 MB". Rendered by the real server into a real headless
Chromium, measured over its DevTools protocol at 360 px and 1280 px."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

from cdp import chromium
from conftest import REPO, free_port

from agent.derive import AssetState
from agent.events import format_time
from agent.status.board import StatusBoard
from agent.status.clock import ClockStatus
from agent.status.page import _hhmm, render
from agent.status.server import StatusServer
from agent.uplinks.base import UplinkHealth
from buffer import BufferStats
from drivers.runner import DeviceHealth

ARTIFACTS = Path(os.environ.get("FLOORLINK_TEST_ARTIFACTS", REPO / "test-artifacts"))


def troubled_board() -> StatusBoard:
    now = time.time()
    board = StatusBoard(site="plant", agent="edge-1", alive=True)
    board.devices = [
        DeviceHealth("press1-plc", "opcua", state="up", last_sample_at=now),
        DeviceHealth("press2-plc-with-a-long-identifier.line-7", "modbus_tcp", state="down",
                     since=now - 600, last_sample_at=now - 600,
                     last_error="connection refused by 10.0.4.22:502 (is the PLC on?)"),
        DeviceHealth("press3-plc", "modbus_tcp", state="up", last_sample_at=now,
                     tag_errors={"lot": "illegal data address"}),
    ]
    board.uplinks = [
        UplinkHealth("broker", "mqtt", "broker.plant.local:8883", connected=False,
                     last_error="MQTT broker broker.plant.local:8883 not reachable"),
        UplinkHealth("erp", "odoo", "https://erp.plant.local", connected=True),
    ]
    stats = BufferStats(path="/var/lib/floorlink/buffer.db", epoch=1, file_bytes=2_000_000,
                        used_bytes=1_500_000, events=1234)
    stats.backlog = {"broker": {1: 40, 2: 2}, "erp": {}}
    stats.dead_letters = {"erp": 3}
    stats.limits = {"size_bytes": 1e9, "hard_bytes": 4e9, "telemetry_age_s": 7 * 86400}
    board.buffer = stats
    board.clock = ClockStatus(False, "kernel (adjtimex)", 0.0)
    board.assets = {"press-1": AssetState(machine_state="running", state_since=now - 60),
                    "press-2": AssetState(machine_state="running", state_since=now - 3600)}
    board.asset_state_devices = {"press-1": "press1-plc",
                                 "press-2": "press2-plc-with-a-long-identifier.line-7"}
    return board


def test_the_header_counts_the_alarm_list_and_every_trouble_is_in_it() -> None:
    view = troubled_board().snapshot()
    page = render(view)
    keys = [a["key"] for a in view["alarms"]]
    assert keys == ["device.press2-plc-with-a-long-identifier.line-7.down",
                    "device.press3-plc.degraded", "uplink.broker.disconnected",
                    "uplink.erp.dead_letters", "clock.unsynchronized"]
    assert f"<h1>{len(keys)} problems</h1>" in page
    assert page.count("<li>") == len(keys)
    down = view["alarms"][0]["message"]
    assert "connection refused by 10.0.4.22:502" in down
    assert "floorlink probe" in down  # what to do, not only what is wrong
    assert "42 event(s) wait in the buffer" in view["alarms"][2]["message"]
    assert "floorlink buffer replay" in view["alarms"][3]["message"]


def test_an_asset_whose_plc_is_down_shows_no_data_not_its_last_state() -> None:
    view = troubled_board().snapshot()
    assert view["assets"]["press-2"]["no_data_since"] is not None
    assert view["assets"]["press-1"]["no_data_since"] is None
    page = render(view)
    card = page[page.index("press-2</span>"):page.index("</article>", page.index("press-2"))]
    assert "no data since" in card
    assert "running" not in card


def test_no_data_since_gives_the_date_when_it_was_not_today() -> None:
    today = datetime.now().astimezone().replace(hour=0, minute=0, second=30, microsecond=0)
    earlier_day = today - timedelta(hours=36)
    assert _hhmm(format_time(today.timestamp())) == "00:00"
    shown = _hhmm(format_time(earlier_day.timestamp()))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", shown)
    assert shown.startswith(earlier_day.strftime("%Y-%m-%d"))


def test_sizes_are_decimal_as_configured() -> None:
    page = render(troubled_board().snapshot())
    assert "telemetry trimmed above 1.0 GB" in page
    assert "hard limit 4.0 GB" in page


async def test_in_chromium_nothing_scrolls_sideways_and_the_count_matches(
        tmp_path: Path) -> None:
    board = troubled_board()
    server = StatusServer(board, "127.0.0.1", free_port())
    await server.start()
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    try:
        async with chromium() as tab:
            for width in (360, 1280):
                await tab.open(f"http://127.0.0.1:{server.port}/", width)
                scroll = await tab.evaluate("document.documentElement.scrollWidth")
                client = await tab.evaluate("document.documentElement.clientWidth")
                assert scroll <= client, f"{width} px: {scroll} px wide, scrolls sideways"
                header = await tab.evaluate("document.querySelector('header h1').innerText")
                listed = await tab.evaluate("document.querySelectorAll('#alarms li').length")
                assert header == f"{listed} problems"
                text = await tab.evaluate("document.body.innerText")
                # Local HH:MM, with the date when it was not today (the test's PLC went
                # silent ten minutes ago: just after midnight, that is yesterday).
                assert re.search(r"no data since (\d{4}-\d\d-\d\d )?\d\d:\d\d", text)
                # A short id never breaks inside: its box is one line high.
                lines = await tab.evaluate(
                    "[...document.querySelectorAll('.card h3 .id:not(.long)')].map("
                    "e => e.getClientRects().length)")
                assert lines
                assert set(lines) == {1}
                png = await tab.screenshot()
                assert png[:8] == b"\x89PNG\r\n\x1a\n"
                assert len(png) > 10_000  # a rendered page, not a blank
                await asyncio.to_thread((ARTIFACTS / f"status-page-{width}.png").write_bytes,
                                        png)
    finally:
        await server.close()
