"""The operators' page end to end: the simulated line's Modbus press (driven by the test)
stops twice without a reason; an operator logs in with a PIN in headless Chromium,
classifies one stop and splits the other. The events reach a real Mosquitto, and the
fake Odoo (which keeps to the verified facts of load()) has the loss reasons on the
right lines. A technician's login does not open /line, an operator's does not open the
technicians' page, and a replayed form post is refused."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cdp import Tab, chromium
from conftest import AgentProcess, Broker, Collector, free_port, wait_until
from test_https_uplink import Middleware
from test_odoo_end_to_end import KEY, OdooThread

from agent.simulator.model import PressModel, PressSnapshot
from agent.simulator.servers import ModbusPress

PIN = "4711"
TECH_PASSWORD = "correct-horse-battery"
LOSS = {21: "mrp.block_reason0", 22: "mrp.block_reason2", 23: "mrp.block_reason5"}

CONFIG = """
site: test-plant
agent: {{id: line-edge}}
devices:
  - id: press2-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {modbus_port}
    poll_interval: 100ms
    tags:
      - {{name: state, register: 40001}}
      - {{name: fault, register: 40006}}
assets:
  - id: press-2
    state: {{tag: press2-plc.state, map: {{1: running, 3: down}}}}
    reason:
      tag: press2-plc.fault
      choices:
        - {{code: 21, text: Waiting for material, group: Material}}
        - {{code: 22, text: Tool change, group: Setup}}
        - {{code: 23, text: Quality check, group: Quality}}
    downtime: {{micro_stop: 1s}}
    erp: {{odoo_workcenter: PRESS2}}
  - id: press-9
    state: {{tag: press2-plc.state, map: {{1: running, 3: down}}}}
    reason:
      choices: [{{code: 21, text: Waiting for material}}]
buffer: {{path: {buffer}}}
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {mqtt_port}}}
  - id: erp
    type: odoo
    url: {odoo_url}
    database: plant
    username: floorlink
    api_key: ${{env:ODOO_KEY}}
    events: ["downtime.*"]
    downtime: {{reasons: {{21: mrp.block_reason0, 22: mrp.block_reason2, 23: mrp.block_reason5}}}}
    backoff: {{initial: 100ms, max: 1s}}
status:
  port: {status_port}
  credentials_file: {technicians}
  operators_file: {operators}
"""


@pytest.fixture
def odoo_thread() -> Iterator[OdooThread]:
    server = OdooThread()  # the API user set up as docs/odoo.md says, and work center PRESS2
    yield server
    server.stop()


async def until(check: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def stop_for(press: ModbusPress, seconds: float) -> None:
    """Down with no fault code (the PLC does not know why), then running again."""
    await press.publish(PressSnapshot(3, 0, 0, 0, False, 0, "", ""))
    await asyncio.sleep(seconds)
    await press.publish(PressSnapshot(1, 0, 0, 0, False, 0, "", ""))


async def start_agent(agent: AgentProcess, collector: Collector) -> None:
    """Start the agent; return once its first state is at the broker."""
    agent.start()
    await asyncio.to_thread(wait_until, lambda: any(
        e["type"].endswith("machine.state_changed.v1") for e in collector.events()),
        45, f"the first state\n{agent.log()}")


async def submit(tab: Tab, script: str) -> None:
    """Run a click or a submit in the page and wait for the page it leads to."""
    await tab.call("Runtime.evaluate", expression=f"setTimeout(() => {{{script}}}, 0)")
    await tab.wait_for("Page.loadEventFired")


async def test_an_operator_classifies_and_splits_stops_and_they_reach_mqtt_and_odoo(
        tmp_path: Path, broker: Broker, collector: Collector, odoo_thread: OdooThread,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODOO_KEY", KEY)
    technicians = tmp_path / "technicians"
    technicians.write_text(f"tech:{TECH_PASSWORD}\n")
    operators = tmp_path / "operators"
    operators.write_text(f"# person:PIN:assets\nana:{PIN}:press-2\nbob:9999:press-9\n")
    for secret in (technicians, operators):
        os.chmod(secret, 0o600)
    press = ModbusPress(PressModel("press-2", seed=1), free_port())
    await press.start()
    await press.publish(PressSnapshot(1, 0, 0, 0, False, 0, "", ""))
    status_port = free_port()
    agent = AgentProcess(tmp_path, CONFIG.format(
        modbus_port=press.port, buffer=tmp_path / "buffer.db", mqtt_port=broker.port,
        odoo_url=odoo_thread.odoo.url, status_port=status_port, technicians=technicians,
        operators=operators))
    base = f"http://127.0.0.1:{status_port}"
    try:
        await start_agent(agent, collector)
        await stop_for(press, 3.0)
        await asyncio.sleep(1.0)
        await stop_for(press, 14.0)

        def ended() -> list[dict[str, object]]:
            return [e["data"] for e in collector.unique_events()
                    if e["type"].endswith("downtime.ended.v1") and e["subject"] == "press-2"]

        await until(lambda: len(ended()) == 2, 30, f"two stops\n{agent.log()}")
        short, long = ended()
        assert short["reason"] == "unclassified"
        assert long["reason"] == "unclassified"

        async with chromium() as tab:
            await tab.open(f"{base}/line", 360, 780)
            assert await tab.evaluate("document.title") == "Line: log in"
            await submit(tab, f"document.getElementById('pin').value = '{PIN}';"
                              "document.querySelector('form').submit()")
            assert await tab.evaluate("document.querySelectorAll('.stop.todo').length") == 2, (
                await tab.evaluate("document.body.innerText"))
            # press-9 is not ana's: it is not on her page.
            assert "press-9" not in await tab.evaluate("document.body.innerText")
            await submit(tab, f"document.querySelector('#stop-{short['downtime_id']} "
                              "button[name=code][value=\"21\"]').click()")
            flash = await tab.evaluate("document.querySelector('.flash').innerText")
            assert flash == "Saved: Waiting for material."
            if os.environ.get("FLOORLINK_SCREENSHOT"):  # the README's picture of /line
                shot = await tab.screenshot()
                await asyncio.to_thread(Path(os.environ["FLOORLINK_SCREENSHOT"]).write_bytes,
                                        shot)
            # Nothing scrolls sideways on a phone.
            assert await tab.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth")
            # The split: at 5 s into the 14 s stop, tool change and then a quality check.
            started = _epoch(str(long["started_at"]))
            at = time.strftime("%H:%M:%S", time.gmtime(started + 5))
            split_form = (f"document.querySelector('#stop-{long['downtime_id']} "
                          "form[action=\"/line/split\"]')")
            await submit(tab, f"const f = {split_form}; f.at.value = '{at}'; f.code.value = '22';"
                              "f.second_code.value = '23'; f.requestSubmit()")
            flash = await tab.evaluate("document.querySelector('.flash').innerText")
            assert flash == "Saved: Tool change, then Quality check."
            text = await tab.evaluate("document.body.innerText")
            assert "Part 1" in text
            assert "Part 2" in text

        def classified() -> list[dict[str, object]]:
            return [e["data"] for e in collector.unique_events()
                    if e["type"].endswith("downtime.classified.v1")]

        await until(lambda: len(classified()) == 3, 20, "three classifications at the broker")
        whole, first, second = classified()
        assert (whole["downtime_id"], whole["reason_code"], whole["classified_by"],
                whole["parts"], whole["replaces_plc_reason"]) == (
            short["downtime_id"], 21, "ana", 1, False)
        assert (first["part"], first["reason_code"], second["part"], second["reason_code"]) == (
            1, 22, 2, 23)
        assert first["ended_at"] == second["started_at"]

        plain = str(short["downtime_id"]).replace("-", "")
        split = str(long["downtime_id"]).replace("-", "")
        want = {f"__floorlink__.dt_{plain}": LOSS[21], f"__floorlink__.dt_{split}": LOSS[22],
                f"__floorlink__.dt_{split}_2": LOSS[23]}
        loss_ids = odoo_thread.read(lambda o: {xmlid: o.xmlids[loss][1]
                                               for xmlid, loss in want.items()})

        def lines() -> dict[str, dict[str, object]]:
            return odoo_thread.read(lambda o: {xmlid: dict(o.by_xmlid(xmlid) or {})
                                               for xmlid in want})

        await until(lambda: {x: r.get("loss_id") for x, r in lines().items()} == loss_ids, 30,
                    "the loss reasons on the right lines in Odoo")
        found = lines()
        assert odoo_thread.read(lambda o: len(o.of("mrp.workcenter.productivity"))) == 3
        one, two = found[f"__floorlink__.dt_{split}"], found[f"__floorlink__.dt_{split}_2"]
        assert one["date_end"] == two["date_start"]
        assert (_odoo_epoch(two["date_end"]) - _odoo_epoch(one["date_start"])
                == pytest.approx(_epoch(str(long["ended_at"])) - started, abs=1.0))

        async with httpx.AsyncClient(base_url=base) as http:
            # A technician's login does not open the operators' page.
            as_tech = await http.get("/line", auth=("tech", TECH_PASSWORD))
            assert as_tech.status_code == 401
            assert "PIN" in as_tech.text
            assert (await http.get("/", auth=("tech", TECH_PASSWORD))).status_code == 200
            # An operator's session does not open the technicians' page.
            logged = await http.post("/line/login", data={"pin": PIN})
            assert logged.status_code == 303
            assert (await http.get("/")).status_code == 401
            page = await http.get("/line")
            assert page.status_code == 200
            token = re.search(r'name=csrf value="([^"]+)"', page.text)
            assert token is not None
            form = {"csrf": token.group(1), "asset": "press-2",
                    "downtime": str(short["downtime_id"]), "code": "22", "part": "1"}
            assert (await http.post("/line/classify", data=form)).status_code == 303
            replayed = await http.post("/line/classify", data=form)
            assert replayed.status_code == 403
            assert "already sent" in replayed.text
            # Not her asset.
            fresh = re.search(r'name=csrf value="([^"]+)"', (await http.get("/line")).text)
            assert fresh is not None
            other = await http.post("/line/classify", data={**form, "csrf": fresh.group(1),
                                                            "asset": "press-9"})
            assert other.status_code == 403
        await until(lambda: len(classified()) == 4, 20, "the reclassification")
        last = classified()[-1]
        assert (last["reason_code"], last["replaces"]) == (22, _id_of(collector, whole))
        audit = (tmp_path / "audit.log").read_text().splitlines()
        assert len(audit) == 3
        assert all('"user": "ana"' in line for line in audit)
    finally:
        agent.stop()
        await press.stop()


def _id_of(collector: Collector, data: dict[str, object]) -> str:
    return str(next(e["id"] for e in collector.unique_events() if e["data"] == data))


def _epoch(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _odoo_epoch(text: object) -> float:
    from datetime import UTC, datetime
    return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


async def test_a_classification_made_while_the_uplinks_are_down_survives_kill_9(
        tmp_path: Path, broker: Broker, collector: Collector,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline: the page works with the broker and the middleware down, and what it saved
    is in the buffer, committed, before it said so: a SIGKILL right after loses nothing,
    and both uplinks deliver it when they are back."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "a-webhook-secret-of-32-characters!!")
    middleware = Middleware()
    operators = tmp_path / "operators"
    operators.write_text(f"ana:{PIN}:press-2\n")
    os.chmod(operators, 0o600)
    press = ModbusPress(PressModel("press-2", seed=1), free_port())
    await press.start()
    await press.publish(PressSnapshot(1, 0, 0, 0, False, 0, "", ""))
    status_port = free_port()
    config = CONFIG.format(
        modbus_port=press.port, buffer=tmp_path / "buffer.db", mqtt_port=broker.port,
        odoo_url="http://127.0.0.1:9", status_port=status_port, technicians="null",
        operators=operators)
    https = (f"  - {{id: mw, type: https, url: 'http://127.0.0.1:{middleware.port}/events', "
             "signing_secret: '${env:TEST_WEBHOOK_SECRET}'}\n")
    config = config[:config.index("  - id: erp")] + https + config[config.index("status:"):]
    agent = AgentProcess(tmp_path, config.replace("  credentials_file: null\n", ""))
    base = f"http://127.0.0.1:{status_port}"
    try:
        await start_agent(agent, collector)
        await asyncio.to_thread(broker.stop)
        await stop_for(press, 2.5)
        async with httpx.AsyncClient(base_url=base) as http:
            stop_id = ""
            for _ in range(100):
                csrf_page = await http.get("/line")
                if csrf_page.status_code == 401:
                    assert (await http.post("/line/login", data={"pin": PIN})).status_code == 303
                    continue
                found = re.search(r'id="stop-([0-9a-f-]+)"', csrf_page.text)
                if found and "to " in csrf_page.text:
                    stop_id = found.group(1)
                    break
                await asyncio.sleep(0.2)
            assert stop_id, "the stop never showed on the page"
            token = re.search(r'name=csrf value="([^"]+)"', csrf_page.text)
            assert token is not None
            saved = await http.post("/line/classify", data={
                "csrf": token.group(1), "asset": "press-2", "downtime": stop_id, "code": "23"})
            assert saved.status_code == 303
            assert "Saved: Quality check." in (await http.get("/line")).text
        agent.kill()  # the moment after "Saved"
        await asyncio.to_thread(broker.start)
        await middleware.start()
        agent.start()

        def classified() -> list[dict[str, object]]:
            return [e["data"] for e in collector.unique_events()
                    if e["type"].endswith("downtime.classified.v1")]

        await until(lambda: classified(), 45, f"the classification\n{agent.log()[-3000:]}")
        assert [(c["downtime_id"], c["reason"], c["classified_by"]) for c in classified()] == [
            (stop_id, "Quality check", "ana")]
        await until(lambda: any(e["type"].endswith("downtime.classified.v1")
                                for e in middleware.accepted), 30, "the classification by HTTPS")
        over_https = [e["data"] for e in middleware.accepted
                      if e["type"].endswith("downtime.classified.v1")]
        assert {e["downtime_id"] for e in over_https} == {stop_id}
        # A shift lead adds a person: a reload, no restart. (Ana stays.)
        operators.write_text(f"ana:{PIN}:press-2\neve:55555:press-2\n")
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        async with httpx.AsyncClient(base_url=base) as http:
            await until(lambda: "line page: 2 operator(s)" in agent.log(), 15, "the reload")
            assert (await http.post("/line/login", data={"pin": "55555"})).status_code == 303
    finally:
        agent.stop()
        await press.stop()
        await middleware.stop()
