"""Simulated line -> agent (killed with SIGKILL midway, then restarted) -> fake Odoo, with
the MQTT uplink beside it as the witness of what was derived. Odoo must end up with
exactly one productivity line per downtime, each order's quantity at its last total,
and no open hold activity for a released hold: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until
from odoo_fake import DOCUMENTED_GROUPS, FakeOdoo
from truth import summarize

KEY = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"
MICRO_STOP = 1.5
SCENARIO_SECONDS = 24.0
T = TypeVar("T")


class OdooThread:
    """The fake Odoo on its own event loop, so the test may block while the agent runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.odoo = FakeOdoo()
        # Set up as docs/odoo.md says: the documented groups, an email address, nothing more.
        self.odoo.add_user("floorlink", KEY, set(DOCUMENTED_GROUPS),
                           email="floorlink@plant.example")
        for code in ("PRESS1", "PRESS2"):
            self.odoo.workcenter(f"Press {code[-1]}", code)
            self.odoo.equipment(f"Press {code[-1]}")
        for n in (*range(1001, 1031), *range(2001, 2031)):  # press-2's and press-1's
            # Planned low, so each order closes having made its plan or more: no backorder.
            self.odoo.order(f"WO-{n}", 1)
        for n in range(1, 61):
            self.odoo.lot(f"LOT-2026-{n:04d}")
        self.run(self.odoo.start)

    def run(self, make: Callable[[], Any]) -> Any:
        async def inside() -> Any:
            result = make()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(inside(), self.loop).result(30)

    def read(self, pick: Callable[[FakeOdoo], T]) -> T:
        return self.run(lambda: pick(self.odoo))  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.run(self.odoo.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def odoo_thread() -> Iterator[OdooThread]:
    server = OdooThread()
    yield server
    server.stop()


def test_kill_midway_and_odoo_still_has_everything_once(
        tmp_path: Path, broker: Broker, collector: Collector, odoo_thread: OdooThread,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODOO_KEY", KEY)
    line = Line(tmp_path, seed=11, duration=SCENARIO_SECONDS)
    config = LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=free_port(), micro_stop=f"{MICRO_STOP}s", buffer=tmp_path / "buffer.db")
    erp = ("    production: {interval: 2s}\n    maintenance: {fault_repeats: 2}\n"
           "    erp: {odoo_workcenter: PRESSX, equipment: Press X}\n")
    config = config.replace("    production: {interval: 2s}\n", erp)
    for n in "12":
        config = config.replace("PRESSX", f"PRESS{n}", 1).replace("Press X", f"Press {n}", 1)
    odoo_uplink = f"""  - id: erp
    type: odoo
    url: {odoo_thread.odoo.url}
    database: plant
    username: floorlink
    api_key: ${{env:ODOO_KEY}}
    production: {{mark_done: true}}
    backoff: {{initial: 100ms, max: 1s}}
    linger: 50ms
"""
    config = config.replace("status: {port:", odoo_uplink + "status: {port:")
    agent = AgentProcess(tmp_path, config)
    agent.start()
    try:
        wait_until(lambda: {e["subject"] for e in collector.events()} >= {"press-1", "press-2"},
                   45, f"first events\n{agent.log()}")
        line.go()
        time.sleep(SCENARIO_SECONDS / 2)
        agent.kill()  # no flush, no goodbye
        agent.start()
        wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2,
                   SCENARIO_SECONDS + 30, "the scenario to end")
        truth = summarize(line.records(), MICRO_STOP)
        downtimes = sum(t.downtimes for t in truth.values())

        def closed_lines() -> int:
            return odoo_thread.read(lambda o: sum(
                1 for r in o.of("mrp.workcenter.productivity") if r["date_end"]))

        wait_until(lambda: closed_lines() >= downtimes, 45,
                   f"{downtimes} closed downtime lines in Odoo\n{agent.log()[-3000:]}")

        def orders_to_close() -> set[str]:
            """Orders a work-order change closed at the broker, not yet done in Odoo: the
            Odoo uplink may be a few events behind the broker on a loaded machine."""
            closed = {e["data"]["work_order"] for e in collector.unique_events()
                      if e["type"].endswith("production.confirmed.v1")
                      and e["data"]["trigger"] == "work_order_change"
                      and e["data"]["good_total"]}
            done = odoo_thread.read(lambda o: {r["name"] for r in o.of("mrp.production")
                                               if r["state"] == "done"})
            return closed - done

        wait_until(lambda: not orders_to_close(), 45,
                   f"the closed orders to be done in Odoo: {orders_to_close()} are not\n"
                   f"{agent.log()[-3000:]}")
        time.sleep(4)  # anything doubled would show up in this time
    finally:
        agent.stop()
        line.stop()
    events = collector.unique_events()
    productivity = odoo_thread.read(lambda o: o.of("mrp.workcenter.productivity"))
    ended = {e["data"]["downtime_id"] for e in events if e["type"].endswith("downtime.ended.v1")}
    assert downtimes > 0
    assert len(productivity) == len(ended) == downtimes  # one line per downtime, none twice
    assert all(line_["date_end"] for line_ in productivity)
    totals: dict[str, float] = {}
    for e in events:
        if e["type"].endswith("production.confirmed.v1") and e["data"]["work_order"]:
            order = e["data"]["work_order"]
            totals[order] = max(totals.get(order, 0), e["data"]["good_total"])
    orders = odoo_thread.read(lambda o: {r["name"]: r["qty_producing"]
                                         for r in o.of("mrp.production")})
    assert totals
    for order, total in totals.items():
        assert orders[order] == total, order
    raised = [e for e in events if e["type"].endswith("hold_raised.v1")]
    assert raised
    assert odoo_thread.read(lambda o: o.of("mail.activity")) == []  # every hold was released
    requested = [e for e in events if e["type"].endswith("maintenance.requested.v1")]
    assert len(odoo_thread.read(lambda o: o.of("maintenance.request"))) == len(requested)
    closed = {e["data"]["work_order"] for e in events
              if e["type"].endswith("production.confirmed.v1")
              and e["data"]["trigger"] == "work_order_change" and e["data"]["good_total"]}
    states = odoo_thread.read(lambda o: {r["name"]: r["state"] for r in o.of("mrp.production")})
    assert all(states[order] == "done" for order in closed)
    log = agent.log()
    assert log.count("kept as a dead letter") == 0, log[-3000:]
    assert "HTTP Request:" not in log  # httpx's line per request buries the agent's own
