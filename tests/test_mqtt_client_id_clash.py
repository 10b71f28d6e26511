"""Two agents with one agent.id on one broker: each connect of one drops the other.

Measured before: they knocked each other off every 1.5 s and the log said only "lost
(Unspecified error)". Against a real Mosquitto, with MQTT 3.1.1 (the broker just closes
the socket) and MQTT 5 (it says "Session taken over")."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from conftest import Broker

from agent.settings import load_config_text
from agent.uplinks.mqtt import MqttPublisher


def twin(tmp_path: Path, port: int, protocol: str, client_id: str = "") -> MqttPublisher:
    extra = f", client_id: {client_id}" if client_id else ""
    config = load_config_text(f"""
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {port}, protocol: '{protocol}',
     reconnect_max: 1s{extra}}}
""", "config.yaml", tmp_path)
    return MqttPublisher(config.uplinks[0], config)  # type: ignore[arg-type]


async def until(predicate: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("protocol", ["3.1.1", pytest.param("5", marks=pytest.mark.slow)])
async def test_a_client_id_clash_is_named_with_the_setting_to_change(
        tmp_path: Path, broker: Broker, protocol: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="floorlink")
    first, second = twin(tmp_path, broker.port, protocol), twin(tmp_path, broker.port, protocol)
    try:
        await first.start()
        await until(lambda: first.health.connected, 10)
        await second.start()

        def named() -> bool:
            return any("same client id 'floorlink-edge'" in (u.health.last_error or "")
                       for u in (first, second))

        await until(named, 30)
        said = [r.getMessage() for r in caplog.records if "same client id" in r.getMessage()]
        assert said, "the clash never reached the log"
        assert "give each agent its own agent.id, or set client_id on uplink 'broker'" \
            in said[0]
        await asyncio.sleep(3)
        # One line per agent for the clash, not one per takeover.
        said = [r.getMessage() for r in caplog.records if "same client id" in r.getMessage()]
        assert len(said) <= 2, said
    finally:
        await second.close()
    # The twin leaves: the survivor's session holds, and the page stops naming a clash.
    await until(lambda: first.health.connected and first.health.last_error is None, 30)
    await first.close()


async def test_distinct_client_ids_on_one_broker_do_not_clash(
        tmp_path: Path, broker: Broker) -> None:
    first = twin(tmp_path, broker.port, "3.1.1", "edge-a")
    second = twin(tmp_path, broker.port, "3.1.1", "edge-b")
    try:
        await first.start()
        await second.start()
        await until(lambda: first.health.connected and second.health.connected, 10)
        await asyncio.sleep(6)
        assert first.health.disconnects == second.health.disconnects == 0
        assert first.health.last_error is None
    finally:
        await first.close()
        await second.close()
