"""Resuming after a broker outage: the reconnect delay doubles up to reconnect_max and
starts over once connected; while away, the uplink says when it tries next; once back,
the error that kept it away is gone. Against a real Mosquitto stopped and started."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import Broker

from agent.settings import load_config_text
from agent.status.board import StatusBoard
from agent.status.page import render
from agent.uplinks.mqtt import MqttPublisher


def publisher(tmp_path: Path, port: int, extra: str = "") -> MqttPublisher:
    config = load_config_text(f"""
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {port}{extra}}}
""", "config.yaml", tmp_path)
    return MqttPublisher(config.uplinks[0], config)  # type: ignore[arg-type]


async def until(predicate: object, within: float) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_after_a_long_outage_the_uplink_resumes_within_reconnect_max(
        tmp_path: Path, broker: Broker) -> None:
    uplink = publisher(tmp_path, broker.port, ", reconnect_max: 2s")
    board = StatusBoard(site="s", agent="edge", alive=True)
    board.uplinks = [uplink.health]
    try:
        await uplink.start()
        await until(lambda: uplink.health.connected, 10)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(9)  # long enough for an uncapped delay to reach 8 s
        assert not uplink.health.connected
        due = uplink.health.next_attempt_at
        assert due is not None
        assert due - time.time() <= 2.0  # never further away than reconnect_max
        assert "Next try</dt><dd>20" in render(board.snapshot())  # the technician sees when
        await asyncio.to_thread(broker.start)
        resumed = await until(lambda: uplink.health.connected, 10)
        assert resumed <= 2.0 + 1.5  # reconnect_max, and a connect's worth of slack
        assert uplink.health.next_attempt_at is None
        assert uplink.health.last_error is None  # what kept it away is over
    finally:
        await uplink.close()


def test_the_default_cap_is_ten_seconds(tmp_path: Path) -> None:
    assert publisher(tmp_path, 1883).settings.reconnect_max == 10.0
