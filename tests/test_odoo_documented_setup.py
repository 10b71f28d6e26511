"""The Odoo uplink against the answers a real Odoo 18 gave when set up exactly as
docs/odoo.md says (../shared/ODOO_API_NOTES.md section 6), which tests/odoo_fake.py
reproduces: an API user with exactly the documented groups and no administrator
right, orders that made their plan, lot-tracked products, hidden equipment, a
sender without an email address, a key that expires while nothing is sent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from odoo_fake import DOCUMENTED_GROUPS, FakeOdoo, validation_error
from test_https_uplink import Rig, backlog, until, until_async
from test_odoo import KEY, T0, ended, ev, hold, odoo_check, started, yaml

from agent.errors import ConfigError
from agent.events import format_time
from agent.settings import load_config_text
from buffer import Outbox

QUALITY_KEY = "7" * 40


@pytest.fixture(autouse=True)
def odoo_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODOO_KEY", KEY)


@pytest.fixture
async def odoo() -> AsyncIterator[FakeOdoo]:
    """An Odoo 18 whose API user has exactly the groups docs/odoo.md names."""
    server = FakeOdoo(version=18)
    server.api_uid = server.add_user(  # type: ignore[attr-defined]
        "floorlink", KEY, set(DOCUMENTED_GROUPS), email="floorlink@plant.example")
    server.press1 = server.workcenter("Press 1", "PRESS1")  # type: ignore[attr-defined]
    await server.start()
    yield server
    await server.stop()


async def running(tmp_path: Path, text: str) -> tuple[Rig, Outbox]:
    rig = Rig(tmp_path, text)
    return rig, await rig.start()


def closing(work_order: str, good_total: float, lot: str | None = None,
            subject: str = "press-1") -> Any:
    data: dict[str, Any] = {"work_order": work_order, "good": 0, "scrap": 0,
                            "good_total": good_total, "scrap_total": 0, "unit": "Units",
                            "trigger": "work_order_change", "interval_start": format_time(T0),
                            "interval_end": format_time(T0 + 300), "estimated": False}
    if lot is not None:
        data["lot"] = lot
    return ev("production.confirmed", data, subject=subject)


def mark_done_calls(odoo: FakeOdoo) -> list[dict[str, Any]]:
    return [c.params["context"] for c in odoo.calls if c.method == "button_mark_done"]


LOT_TAG = """devices: [{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [
  {name: x, register: 40001}, {name: lot, register: 40010, type: string, length: 8}]}]"""


def with_lot_tag(text: str) -> str:
    """press-1 maps the tag holding the lot being produced; press-9 maps none."""
    text = text.replace(
        "devices: [{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{name: x, "
        "register: 40001}]}]", LOT_TAG)
    return text.replace("    erp: {odoo_workcenter: PRESS1, equipment: Press 1}\n",
                        "    erp: {odoo_workcenter: PRESS1, equipment: Press 1}\n"
                        "    production: {lot: plc.lot}\n", 1)


# ---------------------------------------------------------------- closing orders


async def test_an_order_that_made_its_plan_closes_without_asking_for_a_backorder(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    exact = odoo.order("WH/MO/00001", 100)
    over = odoo.order("WH/MO/00002", 100)
    short = odoo.order("WH/MO/00003", 100)
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, "    production: "
                                                                "{mark_done: true}"))
    try:
        await outbox.commit([closing("WH/MO/00001", 100), closing("WH/MO/00002", 120),
                             closing("WH/MO/00003", 40)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert letters == []
    orders = odoo.records["mrp.production"]
    assert [orders[mo]["state"] for mo in (exact, over, short)] == ["done"] * 3
    assert (orders[over]["qty_produced"], orders[short]["qty_produced"]) == (120, 40)
    # A backorder only for the order that made less than planned, as Odoo's screen offers.
    assert [c["mo_ids_to_backorder"] for c in mark_done_calls(odoo)] == [[], [], [short]]
    assert [r["name"] for r in odoo.of("mrp.production")
            if r["name"].endswith("-002")] == ["WH/MO/00003-002"]


async def test_backorder_false_never_creates_one(tmp_path: Path, odoo: FakeOdoo) -> None:
    short = odoo.order("WH/MO/00004", 100)
    rig, outbox = await running(tmp_path, yaml(
        odoo, tmp_path, "    production: {mark_done: true, backorder: false}"))
    try:
        await outbox.commit([closing("WH/MO/00004", 30)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
    finally:
        await rig.stop()
    assert odoo.records["mrp.production"][short]["state"] == "done"
    assert mark_done_calls(odoo)[0]["mo_ids_to_backorder"] == []
    assert len(odoo.of("mrp.production")) == 1


async def test_a_closing_refused_for_its_backorder_replays_once_fixed(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    """The dead letters that closing with a backorder of zero left behind go through when
    replayed: the replay asks for no backorder."""
    mo = odoo.order("WH/MO/00005", 100)
    refusals: list[bool] = []

    def refuse_once(call: Any) -> Any:
        if call.method == "button_mark_done" and not refusals:
            refusals.append(True)
            return validation_error("The operation cannot be completed: The quantity to "
                                    "produce must be positive!")
        return None

    odoo.fail_with = refuse_once
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, "    production: "
                                                                "{mark_done: true}"))
    try:
        await outbox.commit([closing("WH/MO/00005", 100)], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
        assert "The quantity to produce must be positive!" in letter.reason
        assert ".." not in letter.reason
        await outbox.request_replay([letter.event_id])
        await until(lambda: odoo.records["mrp.production"][mo]["state"] == "done", 10)
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        assert await outbox.dead_letters("erp") == []
    finally:
        await rig.stop()
    assert odoo.records["mrp.production"][mo]["qty_produced"] == 100


# ---------------------------------------------------------------- lot-tracked products


async def test_a_lot_tracked_order_closes_in_the_lot_the_plc_names(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    bracket = odoo.product("Bracket B-200", "B-200", tracking="lot")
    first = odoo.order("WH/MO/00010", 50, product=bracket)
    second = odoo.order("WH/MO/00011", 50, product=bracket)
    existing = odoo.add("stock.lot", {"name": "FG-0002", "product_id": bracket})
    text = with_lot_tag(yaml(odoo, tmp_path, "    production: {mark_done: true}"))
    rig, outbox = await running(tmp_path, text)
    try:
        await outbox.commit([closing("WH/MO/00010", 50, lot="FG-0001")], {})
        await until(lambda: odoo.records["mrp.production"][first]["state"] == "done", 10)
        # A replay of the same closing makes no second lot and closes nothing else.
        await outbox.commit([closing("WH/MO/00010", 50, lot="FG-0001"),
                             closing("WH/MO/00011", 50, lot="FG-0002")], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert letters == []
    made = [r for r in odoo.of("stock.lot") if r["name"] == "FG-0001"]
    assert [(r["product_id"]) for r in made] == [bracket]
    orders = odoo.records["mrp.production"]
    assert orders[first]["lot_producing_id"] == made[0]["id"]
    assert orders[second]["lot_producing_id"] == existing  # reused, not created again
    assert orders[second]["state"] == "done"
    assert len([r for r in odoo.of("stock.lot") if r["name"] == "FG-0002"]) == 1
    assert odoo.by_xmlid(f"__floorlink__.lot_{bracket}_" + _digest("FG-0001")) is not None


def _digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:24]


async def test_without_a_lot_tag_the_dead_letter_says_so_and_keeps_odoos_whole_message(
        tmp_path: Path, odoo: FakeOdoo, caplog: pytest.LogCaptureFixture) -> None:
    bracket = odoo.product("Bracket B-200", "B-200", tracking="lot")
    odoo.workcenter("Press 9", "PRESS9")
    mo = odoo.order("WH/MO/00012", 50, product=bracket)
    text = with_lot_tag(yaml(odoo, tmp_path, "    production: {mark_done: true}"))
    rig, outbox = await running(tmp_path, text)
    try:
        with caplog.at_level(logging.ERROR, logger="floorlink"):
            await outbox.commit([closing("WH/MO/00012", 50, subject="press-9")], {})
            await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert odoo.records["mrp.production"][mo]["state"] == "progress"
    # Odoo's message whole: the product is named on its second line.
    assert "You need to supply a Lot/Serial Number for product:\n- [B-200] Bracket B-200" \
        in letter.reason
    assert "Asset 'press-9' maps no production.lot tag" in letter.reason
    assert ".." not in letter.reason
    [line] = [r.getMessage() for r in caplog.records if "kept as a dead letter" in r.getMessage()]
    assert "\n" not in line
    assert "[B-200] Bracket B-200" in line


# ---------------------------------------------------------------- the documented user


async def test_the_documented_api_user_writes_every_event_type_without_a_dead_letter(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    quality_uid = odoo.add_user("quality", QUALITY_KEY, {"stock.group_stock_user"})
    bracket = odoo.product("Bracket B-200", "B-200", tracking="lot")
    mo = odoo.order("WH/MO/00020", 10, product=bracket)
    lot = odoo.lot("LOT-2026-0001")
    equipment = odoo.equipment("Press 1")  # the API user does not follow it
    odoo.workcenter("Press 9", "PRESS9")
    odoo.equipment("Press 9")
    text = with_lot_tag(yaml(odoo, tmp_path, "    production: {mark_done: true}\n"
                                             "    quality: {assignee: quality}"))
    text = text.replace("erp: {odoo_workcenter: PRESS9}",
                        "erp: {odoo_workcenter: PRESS9, equipment: Press 9}")
    hid, dt = "0193de00000000000000000000000031", "0193aa00000000000000000000000031"
    events = [started(dt), ended(dt), closing("WH/MO/00020", 10, lot="FG-0100"),
              hold("quality.hold_raised", hid),
              ev("maintenance.requested", {"fault_code": 17, "reason": "pressure loss",
                                           "occurrences": 3, "first_seen": format_time(T0),
                                           "work_order": "WH/MO/00020", "trigger": "repeats"})]
    rig, outbox = await running(tmp_path, text)
    try:
        await outbox.commit(events, {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 15)
        assert [a["user_id"] for a in odoo.of("mail.activity")] == [quality_uid]
        await outbox.commit([hold("quality.hold_released", hid)], {})
        await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        letters = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert [letter.reason for letter in letters] == []
    [line] = odoo.of("mrp.workcenter.productivity")
    assert line["date_end"]
    assert odoo.records["mrp.production"][mo]["state"] == "done"
    assert odoo.of("mail.activity") == []  # released
    assert odoo.records["stock.lot"][lot]
    [request] = odoo.of("maintenance.request")
    assert request["equipment_id"] == equipment
    # Nothing read ir.model.data, which this user may not read.
    assert not [c for c in odoo.calls if c.model == "ir.model.data" and c.method != "check_"
                "object_reference"]

    # And `odoo check` agrees: everything there, exit 0.
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    code, out = await odoo_check(config_file)
    assert code == 0, out
    assert "MISSING" not in out
    assert "key accepted at" in out
    assert "'floorlink' has an email address" in out
    assert "everything the mapping needs is there" in out


async def test_the_fake_refuses_what_odoo_18_refused(odoo: FakeOdoo) -> None:
    """The fake's section 6 answers, asked directly: the tests above lean on them."""
    import httpx

    async def execute(model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        body = {"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
            "service": "object", "method": "execute_kw",
            "args": ["plant", odoo.api_uid, KEY, model, method, args,  # type: ignore[attr-defined]
                     kwargs]}}
        async with httpx.AsyncClient() as client:
            answer = (await client.post(f"{odoo.url}/jsonrpc", json=body)).json()
        return answer.get("error", {}).get("data", {}).get("name") or answer.get("result")

    assert await execute("mrp.production", "has_access", [], {"operation": "read"}) == \
        "builtins.IndexError"
    assert await execute("mrp.production", "has_access", [[]], {"operation": "read"}) is True
    assert await execute("ir.model.data", "search_read", [[]], {"fields": ["name"]}) == \
        "odoo.exceptions.AccessError"
    assert await execute("ir.model.data", "check_object_reference",
                         ["mrp", "block_reason1"], {}) == ["mrp.workcenter.productivity.loss", 6]
    assert await execute("ir.model.data", "check_object_reference",
                         ["mrp", "nope"], {}) == "builtins.ValueError"


# ---------------------------------------------------------------- odoo check


async def test_odoo_check_names_the_missing_right_and_the_group_that_grants_it(
        tmp_path: Path, odoo: FakeOdoo, monkeypatch: pytest.MonkeyPatch) -> None:
    odoo.add_user("operator", "1" * 40, {"stock.group_stock_user"})
    monkeypatch.setenv("OP_KEY", "1" * 40)
    odoo.equipment("Press 1")
    odoo.workcenter("Press 9", "PRESS9")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml(odoo, tmp_path, "    quality: {assignee: admin}", key_env="OP_KEY")
                           .replace("username: floorlink", "username: operator"))
    code, out = await odoo_check(config_file)
    assert code == 1, out
    assert ("MISSING right to create mrp.workcenter.productivity, needed for downtime events: "
            "give the API user the group Manufacturing / User") in out
    assert "ok      right to read stock.lot" in out
    assert "IndexError" not in out
    # Hidden, not missing: this user has no Maintenance rights and follows no equipment.
    assert ("equipment 'Press 1' not found in database 'plant', or not visible to this user "
            "(asset 'press-1'): make the API user a follower of the equipment or grant it "
            "Maintenance / Equipment Manager") in out
    assert "MISSING 'operator' has no email address" in out
    # Loss reasons and the activity type resolve without reading ir.model.data.
    assert "ok      loss reason mrp.block_reason1" in out
    assert "ok      activity type mail.mail_activity_data_todo" in out
    assert "ir.model.data" not in out


async def test_equipment_the_api_user_cannot_see_is_a_dead_letter_that_says_why(
        tmp_path: Path, odoo: FakeOdoo, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = odoo.add_user("maker", "2" * 40, {"mrp.group_mrp_user", "stock.group_stock_user"})
    monkeypatch.setenv("MAKER_KEY", "2" * 40)
    equipment = odoo.equipment("Press 1")
    text = yaml(odoo, tmp_path, key_env="MAKER_KEY").replace("username: floorlink",
                                                             "username: maker")
    request = ev("maintenance.requested", {"fault_code": 17, "reason": "pressure loss",
                                           "occurrences": 3, "first_seen": format_time(T0),
                                           "work_order": None, "trigger": "repeats"})
    rig, outbox = await running(tmp_path, text)
    try:
        await outbox.commit([request], {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
        assert "or not visible to this user" in letter.reason
        assert "make the API user a follower of the equipment" in letter.reason
        odoo.records["maintenance.equipment"][equipment]["followers"].append(uid)
        await outbox.request_replay([letter.event_id])
        await until(lambda: len(odoo.of("maintenance.request")) == 1, 10)
    finally:
        await rig.stop()


async def test_a_hold_for_another_user_without_a_sender_email_says_what_to_set(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    odoo.records["res.users"][odoo.api_uid]["email"] = False  # type: ignore[attr-defined]
    odoo.add_user("quality", QUALITY_KEY, {"stock.group_stock_user"})
    odoo.lot("LOT-2026-0001")
    rig, outbox = await running(tmp_path, yaml(odoo, tmp_path, "    quality: {assignee: quality}"))
    try:
        await outbox.commit([hold("quality.hold_raised", "0193de00000000000000000000000041")],
                            {})
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 10)
        [letter] = await outbox.dead_letters("erp")
    finally:
        await rig.stop()
    assert "Unable to send message, please configure the sender's email address." \
        in letter.reason
    assert "give the API user an email address" in letter.reason
    assert ".." not in letter.reason


# ---------------------------------------------------------------- keys and URLs


async def test_a_key_revoked_while_nothing_is_sent_raises_the_alarm(
        tmp_path: Path, odoo: FakeOdoo) -> None:
    rig, _ = await running(tmp_path, yaml(odoo, tmp_path, "    login_check: 1s"))
    health = rig.uplinks[0].health
    try:
        await until(lambda: health.credentials_accepted_at is not None, 5)
        del odoo.keys[KEY]  # revoked, or expired after its 90 days
        await until(lambda: health.alarm is not None, 5)
        assert "refused user 'floorlink' with this API key" in health.alarm
        accepted = health.credentials_accepted_at
        odoo.keys[KEY] = odoo.api_uid  # type: ignore[attr-defined]
        await until(lambda: health.alarm is None, 5)
        assert health.credentials_accepted_at > accepted  # type: ignore[operator]
    finally:
        await rig.stop()
    assert [c for c in odoo.calls if c.model != "res.users"] == []  # only logins, no writes


def test_a_url_that_names_the_endpoint_says_what_to_write(tmp_path: Path) -> None:
    server = FakeOdoo()
    text = yaml(server, tmp_path).replace(f"url: {server.url}", f"url: {server.url}/jsonrpc")
    with pytest.raises(ConfigError) as refused:
        load_config_text(text, "c.yaml", tmp_path)
    assert "ends in an Odoo endpoint ('/jsonrpc')" in str(refused.value)
    assert f"url: {server.url}" in str(refused.value)


async def test_a_json2_login_answered_200_without_a_user_is_a_refusal(tmp_path: Path) -> None:
    server = FakeOdoo(version=19)
    server.add_user("floorlink", KEY, set(DOCUMENTED_GROUPS))
    server.workcenter("Press 1", "PRESS1")
    server.proxy_ok_body = {"status": "ok"}
    await server.start()
    try:
        rig, outbox = await running(tmp_path, yaml(server, tmp_path, "    protocol: json2"))
        try:
            await outbox.commit([ended("0193ab00000000000000000000000051")], {})
            health = rig.uplinks[0].health
            await until(lambda: health.alarm is not None, 10)
            assert "without a user id" in health.alarm
            assert await outbox.dead_letters("erp") == []
            server.proxy_ok_body = None
            await until(lambda: health.alarm is None, 10)
            await until_async(lambda: backlog(outbox, "erp"), 0, 10)
        finally:
            await rig.stop()
    finally:
        await server.stop()
