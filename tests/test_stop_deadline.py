"""SIGTERM with the broker away: floorlink exits within 10 s (systemd's patience is not
needed), the final confirmation is committed, and everything arrives after the restart."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until

STOP_BUDGET = 10.0


def test_sigterm_with_the_broker_down_stops_in_time_and_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")  # not started yet: the uplink is down
    line = Line(tmp_path, seed=4, duration=8)
    agent = AgentProcess(tmp_path, LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=free_port(), micro_stop="1.5s", buffer=tmp_path / "buffer.db"))
    collector: Collector | None = None
    try:
        agent.start()
        line.go()
        wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2, 40,
                   "the scenario to end")
        assert agent.proc is not None
        started = time.monotonic()
        assert agent.stop() == 0, agent.log()
        took = time.monotonic() - started
        assert took < STOP_BUDGET, f"stop took {took:.1f}s"
        assert "stopping with events still buffered" in agent.log()

        broker.start()
        collector = Collector(broker.port)
        collector.start()
        agent.start()
        wait_until(lambda: {e["subject"] for e in collector.unique_events()
                            if e["type"].endswith("production.confirmed.v1")
                            and e["data"]["trigger"] == "stop"} >= {"press-1", "press-2"},
                   45, f"the confirmations made at the stop\n{agent.log()}")
    finally:
        agent.stop()
        line.stop()
        if collector is not None:
            collector.stop()
        broker.stop()
