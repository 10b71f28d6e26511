"""SIGTERM with the broker away: floorlink exits within 10 s (systemd's patience is not
needed), the final confirmation is committed, and everything arrives after the restart."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until
from truth import observed, summarize

STOP_BUDGET = 10.0


def test_sigterm_with_the_broker_down_stops_in_time_and_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")  # not started yet: the uplink is down
    line = Line(tmp_path, seed=4, duration=12)
    # Hour-long confirmation intervals: only the confirmation made at the stop carries the
    # counts, so it must be committed before the exit and delivered after the restart.
    status_port = free_port()
    agent = AgentProcess(tmp_path, LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=status_port, micro_stop="1.5s", buffer=tmp_path / "buffer.db",
    ).replace("production: {interval: 2s}", "production: {interval: 1h}"))
    collector: Collector | None = None
    try:
        agent.start()

        def baselines_taken() -> bool:  # counts before the first reading are not ours
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status",
                                            timeout=2) as answer:
                    assets = json.load(answer)["assets"]
            except OSError:
                return False
            return len(assets) == 2 and all(a["state"] for a in assets.values())

        wait_until(baselines_taken, 45, f"both presses seen\n{agent.log()}")
        line.go()
        wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2, 40,
                   "the scenario to end")
        time.sleep(1.5)  # the last counts reach the agent (counts still in a PLC are read
        # after the restart and confirmed then: late, never lost)
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
        truth = summarize(line.records(), 1.5)

        def confirmed_in_full() -> bool:
            seen = observed(collector.unique_events())
            return all(seen.get(asset, {}).get("good", 0) == expected.good
                       for asset, expected in truth.items())

        try:
            wait_until(confirmed_in_full, 45, "the counts confirmed at the stop to arrive")
        except AssertionError as exc:
            seen = observed(collector.unique_events())
            raise AssertionError(f"{exc}: {seen} vs {truth}\n{agent.log()}") from None
        assert {e["subject"] for e in collector.unique_events()
                if e["type"].endswith("production.confirmed.v1")
                and e["data"]["trigger"] == "stop"} == set(truth)
    finally:
        agent.stop()
        line.stop()
        if collector is not None:
            collector.stop()
        broker.stop()
