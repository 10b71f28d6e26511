"""The Odoo uplink against a faithful fake Odoo over real HTTP (tests/odoo_fake.py),
through the real buffer and forwarder: every mapping, exactly-once across lost
answers and replays, each class of error, and both Odoo 18 (JSON-RPC) and
Odoo 19 (JSON-2)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from odoo_fake import DOCUMENTED_GROUPS, FakeOdoo, Fault
from test_https_uplink import Rig, backlog, until, until_async

from agent.errors import ConfigError
from agent.events import EVENT_LANES, Event, format_time, source_uri
from agent.settings import load_config_text
from buffer import Outbox

KEY = "4f1c2b0d9e8a7f6e5d4c3b2a1908f7e6d5c4b3a2"
T0 = datetime(2026, 11, 23, 8, 0, 0, 250000, tzinfo=UTC).timestamp()
_sequence = itertools.count(1)


def ev(kind: str, data: dict[str, Any], *, subject: str = "press-1", at: float = T0,
       event_id: str | None = None) -> Event:
    n = next(_sequence)
    return Event(id=event_id or f"0193{n:028x}", type=kind,
                 source=source_uri("s", "edge", subject), subject=subject, time=at,
                 lane=EVENT_LANES[kind], sequence=n, epoch=1, data=data)


def started(downtime_id: str, at: float = T0, code: int | None = 1, **extra: Any) -> Event:
    return ev("downtime.started", {"downtime_id": downtime_id, "started_at": format_time(at),
                                   "reason_code": code, "reason": "Hydraulic pressure loss",
                                   "work_order": "WH/MO/00001", "start_estimated": False,
                                   **extra}, at=at, event_id=downtime_id)


def ended(downtime_id: str, at: float = T0, end: float = T0 + 2550, code: int | None = 1,
          subject: str = "press-1") -> Event:
    return ev("downtime.ended", {"downtime_id": downtime_id, "started_at": format_time(at),
                                 "ended_at": format_time(end), "duration_s": end - at,
                                 "reason_code": code, "reason": "Hydraulic pressure loss",
                                 "work_order": "WH/MO/00001", "start_estimated": False},
              at=end, subject=subject)


def confirmed(work_order: str, good_total: float, trigger: str = "interval") -> Event:
    return ev("production.confirmed", {"work_order": work_order, "good": 0, "scrap": 0,
                                       "good_total": good_total, "scrap_total": 0,
                                       "unit": "Units", "trigger": trigger,
                                       "interval_start": format_time(T0),
                                       "interval_end": format_time(T0 + 300),
                                       "estimated": False})


def hold(kind: str, hold_id: str, lot: str = "LOT-2026-0001") -> Event:
    return ev(kind, {"hold_id": hold_id, "lot": lot, "reason": "porosity", "quantity": 40,
                     "work_order": "WH/MO/00001"})


def yaml(odoo: FakeOdoo, tmp_path: Path, extra: str = "", key_env: str = "ODOO_KEY") -> str:
    return f"""
site: s
agent: {{id: edge}}
buffer: {{path: {tmp_path / 'buffer.db'}}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
assets:
  - id: press-1
    state: {{tag: plc.x, map: {{1: running, 2: down}}}}
    erp: {{odoo_workcenter: PRESS1, equipment: Press 1}}
  - id: press-9
    state: {{tag: plc.x, map: {{1: running, 2: down}}}}
    erp: {{odoo_workcenter: PRESS9}}
uplinks:
  - id: erp
    type: odoo
    url: {odoo.url}
    database: plant
    username: floorlink
    api_key: ${{env:{key_env}}}
    backoff: {{initial: 100ms, max: 1s}}
    recheck: 1s
    linger: 50ms
{extra}
"""


@pytest.fixture(autouse=True)
def odoo_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODOO_KEY", KEY)


async def _fake(version: int, quality: bool = False, jsonrpc: bool = True) -> FakeOdoo:
    server = FakeOdoo(version=version, quality=quality, jsonrpc=jsonrpc)
    server.add_user("floorlink", KEY, set(DOCUMENTED_GROUPS))
    server.press1 = server.workcenter("Press 1", "PRESS1")  # type: ignore[attr-defined]
    await server.start()
    return server


@pytest.fixture
async def odoo() -> AsyncIterator[FakeOdoo]:
    server = await _fake(18)
    yield server
    await server.stop()


@pytest.fixture
async def odoo19() -> AsyncIterator[FakeOdoo]:
    server = await _fake(19)
    yield server
    await server.stop()


async def running(tmp_path: Path, text: str) -> tuple[Rig, Outbox]:
    rig = Rig(tmp_path, text)
    return rig, await rig.start()


def lines(odoo: FakeOdoo) -> list[dict[str, Any]]:
    return odoo.of("mrp.workcenter.productivity")


# ---------------------------------------------------------------- downtime


async def test_live_downtime_opens_the_line_blocks_the_work_center_and_closes_it(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([started("0193aa00000000000000000000000001")], {})
        await until(lambda: len(lines(odoo)) == 1, 10)
        assert odoo.working_state(odoo.press1) == "blocked"  # type: ignore[attr-defined]
        await outbox.commit([ended("0193aa00000000000000000000000001")], {})
        await until(lambda: bool(lines(odoo)[0]["date_end"]), 10)
        await until_async(lambda: backlog(outbox, "erp"), 0, 5)
    finally:
        await rig.stop()
    [line] = lines(odoo)
    # The user's zone is Europe/Berlin: without context tz these would be an hour off.
    assert line["date_start"] == "2026-11-23 08:00:00"
    assert line["date_end"] == "2026-11-23 08:42:30"
    assert line["workcenter_id"] == odoo.press1  # type: ignore[attr-defined]
    assert line["loss_id"] == odoo.xmlids["mrp.block_reason1"][1]
    assert line["company_id"] == odoo.company
    assert "0193aa00000000000000000000000001" in line["description"]
    assert odoo.by_xmlid("__floorlink__.dt_0193aa00000000000000000000000001") == line
    assert odoo.working_state(odoo.press1) == "normal"  # type: ignore[attr-defined]
    loads = [c for c in odoo.calls if c.method == "load"]
    assert all(c.params["context"] == {"tz": "UTC"} for c in loads)


async def test_closed_mode_writes_one_line_at_the_end_and_reasons_map_to_losses(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    extra = """    downtime: {mode: closed, reasons: {4: mrp.block_reason4}}"""
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, extra))
    try:
        await outbox.commit([started("0193bb00000000000000000000000001", code=4)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 5)
        assert lines(odoo) == []
        await outbox.commit([ended("0193bb00000000000000000000000001", code=4)], {})
        await until(lambda: len(lines(odoo)) == 1, 10)
    finally:
        await rig.stop()
    [line] = lines(odoo)
    assert line["loss_id"] == odoo.xmlids["mrp.block_reason4"][1]
    assert (line["date_start"], line["date_end"]) == ("2026-11-23 08:00:00",
                                                      "2026-11-23 08:42:30")


async def test_a_lost_answer_is_retried_without_a_duplicate(tmp_path: Path,
                                                            odoo: FakeOdoo) -> None:
    dropped: list[str] = []

    def once(call: Any) -> bool:
        if call.method == "load" and not dropped:
            dropped.append(call.method)
            return True
        return False

    odoo.drop_after = once
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([ended(f"0193cc000000000000000000000000{n:02d}") for n in range(5)],
                            {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 15)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert dropped == ["load"]
    assert len([c for c in odoo.calls if c.method == "load"]) >= 2  # the batch went again
    assert len(lines(odoo)) == 5  # committed once by the lost call, updated by the retry
    assert letters == []


async def test_one_bad_row_is_dead_lettered_and_the_good_rows_of_its_batch_still_land(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    extra = """    downtime: {reasons: {7: mrp.no_such_reason}}"""
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, extra))
    try:
        batch = [ended(f"0193dd000000000000000000000000{n:02d}", code=7 if n == 3 else 1)
                 for n in range(8)]
        await outbox.commit(batch, {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 15)
        [letter] = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert len(lines(odoo)) == 7
    assert letter.event_id == batch[3].id
    assert "No matching record found for external id 'mrp.no_such_reason' in field " \
           "'Loss Reason'" in letter.reason
    assert "Create that record in Odoo or correct the external id" in letter.reason
    assert '"record": 3' in (letter.answer or "")
    loads = [c for c in odoo.calls if c.method == "load"]
    assert len(loads[0].params["data"]) == 8  # one call for the batch, then the retry
    assert len(loads) == 2


async def test_a_missing_work_center_is_a_dead_letter_and_replays_once_created(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([ended("0193ee00000000000000000000000001", subject="press-9")], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
        assert letter.reason.startswith(
            "work center 'PRESS9' not found in database 'plant' (asset 'press-9')")
        odoo.workcenter("Press 9", "PRESS9")
        await outbox.request_replay([letter.event_id])
        await until(lambda: len(lines(odoo)) == 1, 10)
    finally:
        await rig.stop()


async def test_access_denied_names_the_missing_group(tmp_path: Path, odoo: FakeOdoo,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    odoo.add_user("operator", "0" * 40, set())
    monkeypatch.setenv("OP_KEY", "0" * 40)
    text = yaml(odoo, tmp_path, key_env="OP_KEY").replace("username: floorlink",
                                                          "username: operator")
    rig, outbox = await running(tmp_path, text)
    try:
        await outbox.commit([ended("0193ff00000000000000000000000001")], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert "You are not allowed to create 'Workcenter Productivity Log'" in letter.reason
    assert "Manufacturing/User" in letter.reason
    assert "Give the API user the access right" in letter.reason
    assert lines(odoo) == []


async def test_an_expired_key_pauses_the_uplink_with_an_alarm_and_loses_nothing(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    del odoo.keys[KEY]  # revoked or expired
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([ended(f"0193ab000000000000000000000000{n:02d}") for n in range(3)],
                            {})
        health = rig.uplinks[0].health
        await until(lambda: health.alarm is not None, 10)
        assert "refused user 'floorlink' with this API key" in health.alarm
        assert "create a new API key" in health.alarm
        assert await backlog(outbox, "erp") == 3
        assert await outbox.dead_letters("erp") == []
        odoo.keys[KEY] = next(uid for uid, u in odoo.users.items() if u.login == "floorlink")
        await until(lambda: len(lines(odoo)) == 3, 15)
        await until(lambda: health.alarm is None, 5)
        assert health.connected
    finally:
        await rig.stop()


async def test_transient_answers_are_retried(tmp_path: Path, odoo: FakeOdoo) -> None:
    odoo.http_errors = [502, 503, 504]
    conflicts = ["psycopg2.errors.SerializationFailure", "odoo.exceptions.AccessDenied"]

    def collide(call: Any) -> Fault | None:
        if call.method == "load" and conflicts:
            name = conflicts.pop(0)
            message = ("could not serialize access due to concurrent update" if "psycopg2"
                       in name else "Too many login failures, please wait a bit before trying "
                       "again.")
            return Fault(name, message, 409)
        return None

    odoo.fail_with = collide
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([ended("0193ac00000000000000000000000001")], {})
        await until(lambda: len(lines(odoo)) == 1, 90)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert letters == []
    assert odoo.http_errors == []
    assert conflicts == []


# ---------------------------------------------------------------- production


async def test_production_sets_the_absolute_quantity_and_never_lowers_it(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    mo = odoo.order("WH/MO/00001", 100)
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        for total in (10, 25, 10, 25):  # a late and a replayed confirmation among them
            await outbox.commit([confirmed("WH/MO/00001", total)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
    finally:
        await rig.stop()
    order = odoo.records["mrp.production"][mo]
    assert order["qty_producing"] == 25
    assert order["components_moved"] == 25  # set_qty_producing followed the write
    writes = [c.params["vals"] for c in odoo.calls if c.method == "write"]
    assert writes == [{"qty_producing": 10}, {"qty_producing": 25}]
    assert order["state"] == "progress"


async def test_mark_done_follows_the_backorder_and_a_replay_changes_nothing(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    first = odoo.order("WH/MO/00001", 100)
    extra = "    production: {mark_done: true}"
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, extra))
    try:
        await outbox.commit([confirmed("WH/MO/00001", 10)], {})
        closing = confirmed("WH/MO/00001", 25, trigger="work_order_change")
        await outbox.commit([closing], {})
        await until(lambda: odoo.records["mrp.production"][first]["state"] == "done", 10)
        await outbox.commit([confirmed("WH/MO/00001", 40)], {})  # it runs on, in -002
        await until_async(lambda: backorder_qty(odoo), 15.0, 10)
        # Replay the closing confirmation: the order is known by its new names.
        await outbox.commit([confirmed("WH/MO/00001", 25, trigger="work_order_change")], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    done = odoo.records["mrp.production"][first]
    assert (done["name"], done["state"], done["qty_produced"]) == ("WH/MO/00001-001", "done", 25)
    [rest] = [r for r in odoo.of("mrp.production") if r["name"] == "WH/MO/00001-002"]
    assert rest["product_qty"] == 75
    assert rest["qty_producing"] == 15
    assert letters == []
    # Once: the replayed closing confirmation did not close the backorder.
    [call] = [c for c in odoo.calls if c.method == "button_mark_done"]
    assert call.params["context"] == {"skip_backorder": True, "skip_consumption": True,
                                      "mo_ids_to_backorder": [first]}


async def backorder_qty(odoo: FakeOdoo) -> float | None:
    rows = [r for r in odoo.of("mrp.production") if r["name"] == "WH/MO/00001-002"]
    return rows[0]["qty_producing"] if rows else None


async def test_mark_done_is_never_called_with_nothing_produced_and_wizards_are_dead_letters(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    draft = odoo.order("WH/MO/00002", 5, state="draft")
    checks = odoo.order("WH/MO/00003", 5)
    extra = "    production: {mark_done: true}"
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, extra))
    try:
        await outbox.commit([confirmed("WH/MO/00002", 0, trigger="work_order_change")], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        odoo.mark_done_wizard = {"type": "ir.actions.act_window",
                                 "res_model": "quality.check.wizard",
                                 "name": "Quality Checks", "target": "new"}
        await outbox.commit([confirmed("WH/MO/00003", 5, trigger="work_order_change")], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
        await outbox.commit([confirmed("WH/MO/99999", 5)], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 2, 10)
        missing = [d for d in await outbox.dead_letters("erp") if d.event_id != letter.event_id]
    finally:
        await rig.stop()
    assert odoo.records["mrp.production"][draft]["state"] == "draft"  # not produced in full
    assert "Odoo needs a person to finish manufacturing order 'WH/MO/00003'" in letter.reason
    assert "Quality Checks" in letter.reason
    assert odoo.records["mrp.production"][checks]["qty_producing"] == 5
    assert missing[0].reason.startswith(
        "manufacturing order 'WH/MO/99999' not found in database 'plant'")


# ---------------------------------------------------------------- holds and maintenance


async def test_a_hold_is_an_activity_on_the_lot_released_once_and_never_reopened(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    lot = odoo.lot("LOT-2026-0001")
    hid = "0193de00000000000000000000000001"
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([hold("quality.hold_raised", hid), hold("quality.hold_raised", hid)],
                            {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        [activity] = odoo.of("mail.activity")
        assert activity["res_id"] == lot
        assert activity["summary"] == "Quality hold: LOT-2026-0001"
        assert "porosity" in activity["note"]
        assert activity["date_deadline"] == "2026-11-23"
        await outbox.commit([hold("quality.hold_released", hid)], {})
        await until(lambda: odoo.of("mail.activity") == [], 10)
        # Replays: the release again (the activity is gone: fine), the raise again (skipped).
        await outbox.commit([hold("quality.hold_released", hid),
                             hold("quality.hold_raised", hid)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert odoo.of("mail.activity") == []
    assert letters == []
    # Remembered across restarts, beside the buffer.
    assert (tmp_path / "odoo-erp.db").is_file()
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([hold("quality.hold_raised", hid)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
    finally:
        await rig.stop()
    assert odoo.of("mail.activity") == []


async def test_a_hold_on_an_unknown_lot_is_a_dead_letter(tmp_path: Path, odoo: FakeOdoo) -> None:
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([hold("quality.hold_raised", "0193df00000000000000000000000001",
                                  lot="LOT-NOPE")], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert letter.reason.startswith("lot 'LOT-NOPE' not found in database 'plant'")


async def test_maintenance_request_goes_to_the_equipment_team_once(tmp_path: Path,
                                                                   odoo: FakeOdoo) -> None:
    equipment = odoo.equipment("Press 1", team_name="Press Line Team")
    request = ev("maintenance.requested", {"fault_code": 17, "reason": "hydraulic pressure loss",
                                           "occurrences": 3, "first_seen": format_time(T0),
                                           "work_order": "WH/MO/00001", "trigger": "repeats"})
    lost: list[bool] = []
    odoo.drop_after = lambda call: call.method == "load" and not lost and not lost.append(True)
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path))
    try:
        await outbox.commit([request], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
    finally:
        await rig.stop()
    [made] = odoo.of("maintenance.request")
    team = odoo.records["maintenance.equipment"][equipment]["maintenance_team_id"]
    assert made["maintenance_team_id"] == team  # not "Internal Maintenance"
    assert made["equipment_id"] == equipment
    assert made["maintenance_type"] == "corrective"
    assert made["priority"] == "2"
    assert made["name"] == "press-1: hydraulic pressure loss"
    assert made["request_date"] == "2026-11-23"
    assert lost == [True]  # the first answer was lost, and the retry made no second request


# ---------------------------------------------------------------- Odoo 19, JSON-2


async def test_odoo_19_speaks_json2_with_named_arguments(tmp_path: Path,
                                                         odoo19: FakeOdoo) -> None:
    mo = odoo19.order("WH/MO/00001", 100)
    rig, outbox = await running(tmp_path, yaml(odoo19, tmp_path))
    try:
        await outbox.commit([started("0193ef00000000000000000000000001"),
                             confirmed("WH/MO/00001", 30),
                             ended("0193ef00000000000000000000000001")], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        details = rig.uplinks[0].health.details
    finally:
        await rig.stop()
    assert details["protocol"] == "json2"
    json2 = [c for c in odoo19.calls if c.protocol == "json2"]
    assert json2
    assert all(c.protocol == "json2" for c in odoo19.calls)
    [line] = lines(odoo19)
    assert line["date_end"] == "2026-11-23 08:42:30"
    assert odoo19.records["mrp.production"][mo]["qty_producing"] == 30


async def test_odoo_19_error_statuses(tmp_path: Path, odoo19: FakeOdoo) -> None:
    script = [Fault("odoo.exceptions.ConcurrencyError", "concurrent update", 409),
              Fault("odoo.exceptions.ValidationError", "Time efficiency must be strictly "
                    "positive", 422)]

    def scripted(call: Any) -> Fault | None:
        return script.pop(0) if call.method == "write" and script else None

    odoo19.fail_with = scripted
    odoo19.order("WH/MO/00001", 100)
    rig, outbox = await running(tmp_path, yaml(odoo19, tmp_path))
    try:
        await outbox.commit([confirmed("WH/MO/00001", 5)], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
        del odoo19.keys[KEY]
        await outbox.commit([confirmed("WH/MO/00001", 6)], {})
        await until(lambda: rig.uplinks[0].health.alarm is not None, 10)
    finally:
        await rig.stop()
    assert letter.reason == ("Odoo mrp.production.write: ValidationError: Time efficiency must "
                             "be strictly positive")
    assert "refused the API key" in (rig.uplinks[0].health.alarm or "")
    assert script == []


@pytest.mark.parametrize(("jsonrpc", "protocol", "expected"), [
    (False, "auto", "json2"),       # an Odoo without /jsonrpc any more
    (True, "jsonrpc", "jsonrpc"),   # 19 still serves JSON-RPC when asked for it
])
async def test_protocol_choice(tmp_path: Path, jsonrpc: bool, protocol: str,
                               expected: str) -> None:
    server = await _fake(19, jsonrpc=jsonrpc)
    try:
        rig, outbox = await running(tmp_path, yaml(server, tmp_path,
                                                   f"    protocol: {protocol}"))
        try:
            await outbox.commit([ended("0193fa00000000000000000000000001")], {})
            await until(lambda: len(lines(server)) == 1, 10)
            assert rig.uplinks[0].health.details["protocol"] == expected
        finally:
            await rig.stop()
    finally:
        await server.stop()
    assert {c.protocol for c in server.calls} == {expected}


async def test_experimental_quality_alert_mode(tmp_path: Path) -> None:
    server = await _fake(18, quality=True)
    lot = server.lot("LOT-2026-0001")
    extra = "    quality: {mode: quality_alert, alert_done_stage: quality.quality_alert_stage_4}"
    hid = "0193fb00000000000000000000000001"
    try:
        rig, outbox = await running(tmp_path, yaml(server, tmp_path, extra))
        try:
            await outbox.commit([hold("quality.hold_raised", hid)], {})
            await until(lambda: len(server.of("quality.alert")) == 1, 10)
            await outbox.commit([hold("quality.hold_released", hid),
                                 hold("quality.hold_raised", hid)], {})
            await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        finally:
            await rig.stop()
    finally:
        await server.stop()
    [alert] = server.of("quality.alert")
    assert alert["lot_id"] == lot
    assert alert["workcenter_id"] == server.press1  # type: ignore[attr-defined]
    assert alert["stage_id"] == server.xmlids["quality.quality_alert_stage_4"][1]


@pytest.mark.parametrize("version", [18, 19])
async def test_a_wrong_database_pauses_rather_than_refusing_events(
        tmp_path: Path, version: int) -> None:
    server = await _fake(version)
    try:
        rig, outbox = await running(tmp_path, yaml(server, tmp_path).replace(
            "database: plant", "database: nosuch"))
        try:
            await outbox.commit([ended("0193fc00000000000000000000000001")], {})
            await until(lambda: rig.uplinks[0].health.alarm is not None, 10)
            assert await outbox.dead_letters("erp") == []
            assert await backlog(outbox, "erp") == 1
        finally:
            await rig.stop()
    finally:
        await server.stop()
    assert "nosuch" in (rig.uplinks[0].health.alarm or "")


# ---------------------------------------------------------------- configuration


def test_config_refuses_unmapped_events_and_unknown_assets(tmp_path: Path) -> None:
    server = FakeOdoo()
    base = yaml(server, tmp_path)
    with pytest.raises(ConfigError) as bad_events:
        load_config_text(base + "    events: [telemetry]\n", "c.yaml", tmp_path)
    assert "has no Odoo record" in str(bad_events.value)
    # The shift's figures are for people and dashboards: the Odoo uplink never writes them.
    with pytest.raises(ConfigError) as shift_events:
        load_config_text(base + "    events: [shift.completed]\n", "c.yaml", tmp_path)
    assert "shift.completed, which has no Odoo record" in str(shift_events.value)
    with pytest.raises(ConfigError) as unknown:
        load_config_text(base + "    assets: {press-7: {workcenter: X}}\n", "c.yaml", tmp_path)
    assert "no asset has this id" in str(unknown.value)
    with pytest.raises(ConfigError) as clear_key:
        load_config_text(base.replace("${env:ODOO_KEY}", "abc"), "c.yaml", tmp_path)
    assert "api_key" in str(clear_key.value)


# ---------------------------------------------------------------- commissioning


async def odoo_check(config_file: Path) -> tuple[int, str]:
    from conftest import floorlink_command

    process = await asyncio.create_subprocess_exec(
        *floorlink_command("odoo", "check", "-c", str(config_file)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode()


async def test_odoo_check_lists_what_is_missing_and_what_rights_lack(
        tmp_path: Path, odoo: FakeOdoo, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file = tmp_path / "config.yaml"
    extra = "    downtime: {reasons: {7: mrp.no_such_reason}}"
    config_file.write_text(yaml(odoo, tmp_path, extra))
    code, out = await odoo_check(config_file)
    assert code == 1, out
    assert "ok      logged in as 'floorlink'" in out
    assert "over jsonrpc, Odoo 18.0" in out
    assert "ok      work center 'PRESS1' for asset 'press-1'" in out
    assert "MISSING work center 'PRESS9' not found in database 'plant' (asset 'press-9')" in out
    assert "MISSING equipment 'Press 1' not found" in out
    assert "MISSING asset 'press-9' has no equipment: set erp.equipment" in out
    assert "MISSING loss reason mrp.no_such_reason" in out
    assert "ok      loss reason mrp.block_reason1" in out
    assert "ok      right to create mrp.workcenter.productivity" in out

    odoo.add_user("operator", "1" * 40, set())
    monkeypatch.setenv("OP_KEY", "1" * 40)
    config_file.write_text(yaml(odoo, tmp_path, key_env="OP_KEY")
                           .replace("username: floorlink", "username: operator"))
    code, out = await odoo_check(config_file)
    assert code == 1
    assert "MISSING right to create mrp.workcenter.productivity, needed for downtime" in out

    monkeypatch.setenv("OP_KEY", "2" * 40)
    code, out = await odoo_check(config_file)
    assert code == 69
    assert "refused user 'operator' with this API key" in out
