"""Draining a backlog to a real Mosquitto: by lane priority, paced, in order.

A live quality hold committed in the middle of a large drain must reach the
subscriber within a second; the drain must keep to the configured rate; and
business events must arrive in commit order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Collector
from test_buffer_retention import big

from agent.events import Lane
from agent.settings import load_config_text
from agent.uplinks.forwarder import Forwarder
from agent.uplinks.mqtt import MqttPublisher
from buffer import Outbox

BACKLOG = 20_000
RATE = 2_000

CONFIG = """
site: s
agent: {{id: a}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - {{id: broker, type: mqtt, port: {port}, max_inflight: 50, max_rate: {rate}}}
"""


async def wait_for(predicate: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_a_live_hold_overtakes_a_paced_backlog_which_keeps_its_order(
        tmp_path: Path, collector: Collector) -> None:
    config = load_config_text(CONFIG.format(port=collector.port, rate=RATE), "c.yaml", tmp_path)
    settings = config.uplinks[0]
    outbox = await Outbox.open(tmp_path / "b.db", ["broker"])
    for first in range(0, BACKLOG, 1000):
        await outbox.commit([big(n, Lane.BUSINESS if n % 4 else Lane.TELEMETRY)
                             for n in range(first, first + 1000)], {})
    publisher = MqttPublisher(settings, config)
    await publisher.start()
    forwarder = Forwarder(publisher, outbox, settings.max_inflight, settings.max_rate)
    task = asyncio.create_task(forwarder.run())
    try:
        await wait_for(lambda: len(collector.events()) > 1000, 20)
        before, started = len(collector.events()), time.monotonic()
        await asyncio.sleep(3)
        rate = (len(collector.events()) - before) / (time.monotonic() - started)
        assert rate <= RATE * 1.1, f"{rate:.0f}/s exceeds the {RATE}/s cap"
        assert rate >= RATE * 0.6, f"{rate:.0f}/s: the drain is far below its cap"

        latencies = []
        for n in range(3):
            hold = big(90_000 + n, Lane.HOLD)
            await outbox.commit([hold], {})
            latencies.append(await wait_for(
                lambda h=hold: any(e["id"] == h.id for e in collector.events()), 1.0))
            await asyncio.sleep(0.3)
        remaining = BACKLOG - len(collector.unique_events())
        assert remaining > 3000, "the backlog was gone before the holds; nothing was proven"
        print(f"\nhold latency during the drain: {[round(x * 1000) for x in latencies]} ms, "
              f"drain {rate:.0f}/s, {remaining} still queued")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await publisher.close()
        await outbox.close()
    business = [int(e["id"].split("-")[1]) for e in collector.events()
                if e["id"].startswith("business-")]
    assert business == sorted(business)
