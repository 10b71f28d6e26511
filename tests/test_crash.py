"""kill -9 at random moments, many times, under a heavy event flow.

Real agent process, real Mosquitto, the simulated line with its own ground
truth. After every kill the test records what the buffer had committed (the
agent is dead, so the file is quiet) and whether the kill landed mid-commit (a
transaction half-written in the WAL) or mid-publish (events the broker already
had, but whose acknowledgement the agent had not yet recorded). At the end:

- every event committed before any kill was delivered;
- per asset and lane, events arrived in order with no gap;
- every duplicate is the same event: same id, same body;
- production totals equal the simulator's counters exactly.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until
from test_end_to_end import MICRO_STOP, assert_order_and_completeness
from truth import counts_covered, observed, summarize
from wal import uncommitted_frames

KILLS = 20
SCENARIO_SECONDS = 75.0


def heavy(config: str) -> str:
    """Every tag also publishes raw telemetry ten times a second."""
    return (config.replace("poll_interval: 100ms", "poll_interval: 50ms")
            .replace("}}\n", "}}\n")
            .replace("{name: ", "{publish: every 100ms, name: "))


class Crashes:
    def __init__(self) -> None:
        self.committed: set[str] = set()
        self.mid_commit = 0
        self.mid_publish = 0
        self.kills = 0

    def inspect(self, buffer: Path, delivered: set[str]) -> None:
        """Called with the agent dead: what did the file hold at the kill?"""
        self.kills += 1
        if uncommitted_frames(Path(f"{buffer}-wal")):
            self.mid_commit += 1
        db = sqlite3.connect(buffer)
        try:
            rows = db.execute("SELECT e.id, e.position > COALESCE(c.position, 0) FROM events e "
                              "LEFT JOIN cursors c ON c.uplink = 'broker' AND c.lane = e.lane"
                              ).fetchall()
        finally:
            db.close()
        self.committed.update(event_id for event_id, _ in rows)
        if any(pending and event_id in delivered for event_id, pending in rows):
            self.mid_publish += 1


def freeze_until_mid_commit(agent: AgentProcess, wal: Path, rng: random.Random,
                            budget: float = 4.0) -> None:
    """SIGSTOP at random instants until the WAL shows a half-written transaction (or the
    budget runs out); the caller then kills the frozen process."""
    assert agent.proc is not None
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        agent.proc.send_signal(signal.SIGSTOP)
        if uncommitted_frames(wal):
            return
        agent.proc.send_signal(signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.003))


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    instance = Line(tmp_path, seed=23, duration=SCENARIO_SECONDS)
    yield instance
    instance.stop()


@pytest.mark.slow
def test_twenty_kills_lose_nothing_reorder_nothing_and_count_exactly(
        tmp_path: Path, broker: Broker, collector: Collector, line: Line) -> None:
    buffer = tmp_path / "buffer.db"
    agent = AgentProcess(tmp_path, heavy(LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=free_port(), micro_stop=f"{MICRO_STOP}s", buffer=buffer)))
    crashes = Crashes()
    rng = random.Random(5)
    agent.start()
    wait_until(lambda: {e["subject"] for e in collector.events()} >= {"press-1", "press-2"},
               45, f"first events from both presses\n{agent.log()}")
    line.go()
    for run in range(KILLS):
        if run:
            wait_until(lambda r=run: agent.log().count(" running: ") > r, 30,
                       f"the agent to run again\n{agent.log()[-3000:]}")
        time.sleep(rng.uniform(0.3, 1.6))
        if run % 2:
            # Every other kill hunts for the instant a transaction is half-written:
            # freeze the agent at random, look at its WAL, kill if caught mid-commit.
            freeze_until_mid_commit(agent, Path(f"{buffer}-wal"), rng)
        agent.kill()
        time.sleep(0.2)  # let acknowledged messages reach the collector
        crashes.inspect(buffer, {e["id"] for e in collector.events()})
        agent.start()
    print(f"\n{crashes.kills} kills: {crashes.mid_commit} mid-commit, "
          f"{crashes.mid_publish} mid-publish; {len(crashes.committed)} committed events seen")

    wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2,
               SCENARIO_SECONDS + 60, "the scenario to end")
    truth = summarize(line.records(), MICRO_STOP)

    wait_until(lambda: counts_covered(truth, collector.unique_events()), 60,
               f"confirmations to cover the counters\n{agent.log()[-3000:]}")
    time.sleep(3)
    assert agent.stop() == 0, agent.log()[-3000:]

    events = collector.events()
    delivered = {e["id"] for e in events}
    assert crashes.committed - delivered == set(), "committed before a kill, never delivered"
    assert_order_and_completeness(collector.unique_events())
    by_identity: dict[tuple[str, str, int], str] = {}
    by_id: dict[str, str] = {}
    for event in events:
        body = json.dumps(event, sort_keys=True)
        key = (event["subject"], event["lane"], event["sequence"])
        assert by_identity.setdefault(key, event["id"]) == event["id"], f"{key}: two ids"
        assert by_id.setdefault(event["id"], body) == body, f"{event['id']}: two bodies"
    seen = observed(collector.unique_events())
    for asset, expected in truth.items():
        assert seen[asset]["good"] == expected.good, f"{asset}: good count across 20 kills"
        assert seen[asset]["scrap"] == expected.scrap, f"{asset}: scrap count across 20 kills"
    assert crashes.mid_publish > 0, "no kill interrupted a delivery: the test proved little"
    assert crashes.mid_commit > 0, "no kill caught a half-written commit"
    assert len(events) > len(delivered), "no duplicate at all: the kills missed the flow"
