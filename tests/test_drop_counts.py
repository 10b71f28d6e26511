"""Drop counts are exact: what the buffer says it dropped for an uplink is exactly
what a subscriber never received, over a real Mosquitto and a broker outage.

Events already handed to paho when the broker went away sit in its queue and go
out after the reconnect even if retention deletes their rows meanwhile: they are
not lost, so they must not be counted as dropped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import Broker, Collector
from test_buffer_retention import big

from agent.app import _make_uplink, _window
from agent.events import Lane
from agent.settings import load_config_text
from agent.uplinks.forwarder import Forwarder
from buffer import Limits, Outbox, enforce

CONFIG = """
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
assets: []
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {port}, max_inflight: 50}}
"""


async def wait_for(predicate: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.05)


async def test_dropped_counts_equal_what_the_subscriber_never_received(
        tmp_path: Path, broker: Broker, collector: Collector) -> None:
    config = load_config_text(CONFIG.format(port=broker.port), "c.yaml", tmp_path)
    [settings] = config.uplinks
    limits = Limits(size_bytes=1_000_000, hard_bytes=1_000_000)
    outbox = await Outbox.open(tmp_path / "b.db", ["broker"])
    uplink = _make_uplink(settings, config, outbox)
    await uplink.start()
    forwarder = Forwarder(uplink, outbox, _window(settings))
    task = asyncio.create_task(forwarder.run())
    committed: list[str] = []

    async def commit(count: int) -> None:
        for first in range(len(committed), len(committed) + count, 100):
            events = [big(n, Lane.TELEMETRY) for n in range(first, first + 100)]
            await outbox.commit(events, {})
            committed.extend(e.id for e in events)

    try:
        await commit(300)
        await wait_for(lambda: len(collector.unique_events()) == 300, 15)
        await asyncio.to_thread(broker.stop)
        await wait_for(lambda: not uplink.health.connected, 10)
        await commit(1200)  # past the hard limit while the broker is away
        await wait_for(lambda: forwarder.in_flight >= 50, 10)  # paho holds a window
        await forwarder.flush()
        outbox.limits = limits  # as after a restart with lower limits than the backlog
        result = await enforce(outbox, [], handed={"broker": forwarder.handed})
        dropped = result.dropped["broker"]["telemetry"]
        assert dropped > 0
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: sum((forwarder.in_flight, len(forwarder._queued[2]))) == 0
                       and uplink.health.connected, 30)
        await asyncio.sleep(2)  # anything still on its way arrives
        received = {e["id"] for e in collector.unique_events()}
        never = set(committed) - received
        assert len(never) == dropped  # exact: in-flight events were not counted
        assert (await outbox.stats()).drops == {"broker": {"telemetry": dropped}}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await uplink.close()
        await outbox.close()
