"""Simulated line (real OPC UA + Modbus TCP) -> agent -> real Mosquitto -> subscriber.

Ground truth is the simulator's own record of what it did; the assertions
compare what the subscriber received against it, exactly.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import (
    LINE_CONFIG,
    REPO,
    AgentProcess,
    Broker,
    Collector,
    Line,
    free_port,
    wait_until,
)
from truth import counts_covered, observed, summarize

MICRO_STOP = 1.5
SCENARIO_SECONDS = 22.0
SCHEMAS = {path.name.removesuffix(".json"): json.loads(path.read_text())
           for path in (REPO / "docs" / "schemas").glob("*.json")}


class Rig:
    def __init__(self, tmp_path: Path, broker: Broker, collector: Collector, seed: int) -> None:
        self.broker, self.collector = broker, collector
        self.line = Line(tmp_path, seed=seed, duration=SCENARIO_SECONDS)
        self.status_port = free_port()
        self.agent = AgentProcess(tmp_path, LINE_CONFIG.format(
            opcua_port=self.line.opcua_port, modbus_port=self.line.modbus_port,
            mqtt_port=broker.port, status_port=self.status_port, micro_stop=f"{MICRO_STOP}s",
            buffer=tmp_path / "buffer.db"))

    def start(self) -> None:
        self.agent.start()
        # Both assets' first state seen and delivered: baselines are taken, the run may begin.
        wait_until(lambda: {e["subject"] for e in self.collector.events()} >= {"press-1",
                                                                                "press-2"},
                   45, f"first events from both presses\n{self.agent.log()}")
        self.line.go()

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status",
                                    timeout=5) as answer:
            return dict(json.load(answer))

    def wait_for_end_and_totals(self) -> None:
        wait_until(lambda: sum(1 for r in self.line.records() if r["kind"] == "end") == 2,
                   SCENARIO_SECONDS + 30, "the scenario to end")
        truth = summarize(self.line.records(), MICRO_STOP)

        # Production is confirmed every 2 s; allow generous slack on a busy machine.
        wait_until(lambda: counts_covered(truth, self.collector.unique_events()), 30,
                   "confirmations to cover the simulator's counters")
        time.sleep(3)  # anything extra (a double count) would arrive in this time

    def stop(self) -> None:
        self.agent.stop()
        self.line.stop()


@pytest.fixture
def rig(tmp_path: Path, broker: Broker, collector: Collector) -> Iterator[Rig]:
    instance = Rig(tmp_path, broker, collector, seed=11)
    yield instance
    instance.stop()


def assert_matches_truth(rig: Rig) -> None:
    assert_events_match(rig.line.records(), rig.collector.unique_events())


def assert_events_match(records: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Every part, downtime (with its reason) and hold (with its lot) the simulator
    recorded, exactly, in the delivered events."""
    truth = summarize(records, MICRO_STOP)
    seen = observed(events)
    for asset, expected in truth.items():
        got = seen[asset]
        assert got["good"] == expected.good, f"{asset}: good count"
        assert got["scrap"] == expected.scrap, f"{asset}: scrap count"
        assert got["downtime.started"] == expected.downtimes, f"{asset}: downtimes started"
        assert got["downtime.ended"] == expected.downtimes, f"{asset}: downtimes ended"
        assert got["quality.hold_raised"] == expected.holds, f"{asset}: holds raised"
        assert got["quality.hold_released"] == expected.holds, f"{asset}: holds released"
    raised = [e["data"]["lot"] for e in events if e["type"].endswith("hold_raised.v1")]
    for asset, expected in truth.items():
        lots = [e["data"]["lot"] for e in events
                if e["subject"] == asset and e["type"].endswith("hold_raised.v1")]
        assert lots == expected.hold_lots, f"{asset}: lots on hold"
    assert raised, "the scenario raised no hold at all: pick another seed"
    for asset, expected in truth.items():
        reasons = [e["data"]["reason_code"] for e in events
                   if e["subject"] == asset and e["type"].endswith("downtime.started.v1")]
        assert reasons == expected.downtime_reasons, f"{asset}: downtime reasons"


def assert_order_and_completeness(events: list[dict[str, Any]]) -> None:
    """Per asset and lane: sequences arrive in order, 1..N with no gap (nothing lost)."""
    by_stream: dict[tuple[str, str], list[int]] = {}
    for event in events:
        by_stream.setdefault((event["subject"], event["lane"]), []).append(event["sequence"])
    assert by_stream
    for stream, sequences in by_stream.items():
        assert sequences == list(range(1, len(sequences) + 1)), f"{stream}: {sequences}"


def test_line_to_broker_matches_ground_truth(rig: Rig) -> None:
    rig.start()
    status = rig.status()
    assert [d["state"] for d in status["devices"]] == ["up", "up"]
    assert status["uplinks"][0]["connected"] is True
    rig.wait_for_end_and_totals()
    assert_matches_truth(rig)
    events = rig.collector.unique_events()
    assert_order_and_completeness(events)
    for event in events:
        jsonschema.validate(event, SCHEMAS[event["type"]])
    truth = summarize(rig.line.records(), MICRO_STOP)
    # The scenario had both kinds of stop, so equal counts above prove micro-stops stayed out.
    assert sum(t.micro_stops for t in truth.values()) > 0
    assert sum(t.downtimes for t in truth.values()) > 0
    # Every downtime pairs a start with its end, by id.
    started = {e["id"] for e in events if e["type"].endswith("downtime.started.v1")}
    ended = {e["data"]["downtime_id"] for e in events if e["type"].endswith("downtime.ended.v1")}
    assert started == ended
    # Topics follow the default template floorlink/{site}/{asset}/{type}.
    topics = {topic for topic, body in rig.collector.messages if "specversion" in body}
    assert "floorlink/test-plant/press-1/downtime.started" in topics or not started
    assert rig.agent.stop() == 0, rig.agent.log()


def test_broker_outage_loses_nothing_and_keeps_order(rig: Rig) -> None:
    rig.start()
    time.sleep(4)
    delivered_before = len(rig.collector.unique_events())
    rig.broker.stop()
    time.sleep(6)  # the line keeps running; the agent buffers
    backlog = sum(rig.status()["buffer"]["backlog"]["broker"].values())
    assert rig.status()["uplinks"][0]["connected"] is False
    rig.broker.start()
    rig.wait_for_end_and_totals()
    assert backlog > 0, "the outage produced no backlog; the test proves nothing"
    assert len(rig.collector.unique_events()) > delivered_before
    assert_matches_truth(rig)
    assert_order_and_completeness(rig.collector.unique_events())
    assert "MQTT broker" in rig.agent.log()
    assert "lost" in rig.agent.log()


def test_agent_killed_during_an_outage_resends_everything_and_counts_exactly(rig: Rig) -> None:
    """kill -9 while events wait for their PUBACK: after restart they are sent again, and the
    confirmed quantities still sum exactly to the simulator's counter increase."""
    rig.start()
    time.sleep(3)
    rig.broker.stop()
    time.sleep(5)
    assert sum(rig.status()["buffer"]["backlog"]["broker"].values()) > 0
    rig.agent.kill()
    rig.agent.start()
    rig.broker.start()
    rig.wait_for_end_and_totals()
    truth = summarize(rig.line.records(), MICRO_STOP)
    seen = observed(rig.collector.unique_events())
    for asset, expected in truth.items():
        assert seen[asset]["good"] == expected.good, f"{asset}: good count across the kill"
        assert seen[asset]["scrap"] == expected.scrap, f"{asset}: scrap count across the kill"
    assert_order_and_completeness(rig.collector.unique_events())


def test_a_clean_stop_confirms_and_delivers_production_before_exiting(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """With an hour-long interval, only the final confirmation on SIGTERM can carry the
    counts: it must be committed and delivered before the process exits."""
    rig = Rig(tmp_path, broker, collector, seed=11)
    config = rig.agent.config.read_text().replace("production: {interval: 2s}",
                                                  "production: {interval: 1h}")
    rig.agent.config.write_text(config)
    try:
        rig.start()
        wait_until(lambda: sum(1 for r in rig.line.records() if r["kind"] == "end") == 2,
                   SCENARIO_SECONDS + 30, "the scenario to end")
        time.sleep(1)
        assert not [e for e in collector.unique_events()
                    if e["type"].endswith("production.confirmed.v1")
                    and e["data"]["trigger"] != "work_order_change"]
        assert rig.agent.stop() == 0, rig.agent.log()
        time.sleep(1)
        truth = summarize(rig.line.records(), MICRO_STOP)
        seen = observed(collector.unique_events())
        for asset, expected in truth.items():
            assert seen[asset]["good"] == expected.good, f"{asset}: good confirmed on stop"
        stops = [e for e in collector.unique_events()
                 if e["type"].endswith("production.confirmed.v1")
                 and e["data"]["trigger"] == "stop"]
        assert {e["subject"] for e in stops} == {"press-1", "press-2"}
    finally:
        rig.stop()


def test_telemetry_in_batches_reaches_the_broker_whole_and_business_events_stay_exact(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    """telemetry.events: batch on the real line: every tag publishes on change, each step's
    values travel as one telemetry.batch event through the buffer and Mosquitto, each fits
    the published schema, no value is lost (per subject, sequences run 1..N), and the
    business events still match the simulator's ground truth exactly."""
    rig = Rig(tmp_path, broker, collector, seed=11)
    config = rig.agent.config.read_text()
    rig.agent.config.write_text(config.replace("{name: ", "{publish: on_change, name: ")
                                + "telemetry: {events: batch}\n")
    try:
        rig.start()
        rig.wait_for_end_and_totals()
        assert_matches_truth(rig)
        events = rig.collector.unique_events()
        assert_order_and_completeness(events)
        batches = [e for e in events if e["type"] == "floorlink.telemetry.batch.v1"]
        assert not [e for e in events if e["type"] == "floorlink.telemetry.v1"]
        assert batches, "no telemetry batch arrived"
        for event in batches:
            jsonschema.validate(event, SCHEMAS[event["type"]])
        # Both presses' counters went out on change: each value once, in rising order.
        for subject in ("press-1", "press-2"):
            goods = [v["value"] for e in batches if e["subject"] == subject
                     for v in e["data"]["values"] if v["name"] == "good"]
            assert len(goods) > 3, (subject, goods)
            assert goods == sorted(set(goods)), (subject, goods)
        assert max(len(e["data"]["values"]) for e in batches) > 1, "every batch held one value"
        assert rig.agent.stop() == 0, rig.agent.log()
    finally:
        rig.stop()
