"""OPC UA: 1,000 items changing at 10 Hz on an asyncua server in its own process.
Notifications per second and latency (server-side write, as its SourceTimestamp, to
the sample in hand) through floorlink's driver and runner, against a plain asyncua
subscription to the same items in the same run (the ceiling)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import time
from typing import Any

from .ports import free_port

ITEMS = 1000
RATE_HZ = 10
ROUNDS = 3
NS = "urn:bench:opcua"
# Both sides ask the server for the same monitored-item queue. asyncua's server reads a
# requested size of 0 (asyncua's client default) as its largest queue, keeping every
# change, while floorlink's default of 1 (the specification's) keeps the latest: when
# the server falls behind it then sends fewer notifications, and the two rates measured
# different things (floorlink 0.35-0.85 of raw across runs; 1.02 with equal queues).
QUEUE = 100


def _serve(port: int, ready: Any, items: int = ITEMS, rate_hz: float = RATE_HZ) -> None:
    """`items` Int32 variables changing `rate_hz` times a second, with SourceTimestamps."""
    async def main() -> None:
        from datetime import UTC, datetime

        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NS)
        folder = await server.nodes.objects.add_object(ua.NodeId("Bench", idx), "Bench")
        nodes = [await folder.add_variable(ua.NodeId(f"v{n}", idx), f"v{n}",
                                           ua.Variant(0, ua.VariantType.Int32))
                 for n in range(items)]
        await server.start()
        ready.set()
        tick = 0
        next_at = time.monotonic()
        while True:
            tick += 1
            for node in nodes:
                stamp = datetime.now(UTC)
                await server.write_attribute_value(node.nodeid, ua.DataValue(
                    ua.Variant(tick, ua.VariantType.Int32), SourceTimestamp=stamp,
                    ServerTimestamp=stamp))
            next_at += 1 / rate_hz
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    asyncio.run(main())


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.latencies: list[float] = []
        self.measuring = False

    def add(self, source_time: float) -> None:
        if self.measuring:
            self.count += 1
            self.latencies.append(time.time() - source_time)


async def _raw(endpoint: str, seconds: float) -> _Counter:
    from asyncua import Client, ua

    counter = _Counter()

    class Handler:
        def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
            stamp = data.monitored_item.Value.SourceTimestamp
            counter.add(stamp.timestamp())

    client = Client(endpoint)
    await client.connect()
    try:
        idx = await client.get_namespace_index(NS)
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_data_change([client.get_node(ua.NodeId(f"v{n}", idx))
                                         for n in range(ITEMS)], queuesize=QUEUE)
        await _measure(counter, seconds)
    finally:
        # A server busy writing 10,000 values a second can leave a polite goodbye
        # unanswered; the figures are taken, so do not wait for it forever.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 10)
    return counter


async def _floorlink(endpoint: str, seconds: float) -> _Counter:
    from agent.settings.models import OpcUaDevice
    from drivers.opcua.client import OpcUaDriver
    from drivers.runner import DeviceHealth, run_device

    counter = _Counter()

    async def deliver(batch: list[Any]) -> None:
        for sample in batch:
            counter.add(sample.source_time)

    device = OpcUaDevice.model_validate({
        "id": "bench", "protocol": "opcua", "endpoint": endpoint, "publishing_interval": 0.05,
        "tags": [{"name": f"v{n}", "node": f"nsu={NS};s=v{n}", "queue_size": QUEUE}
                 for n in range(ITEMS)]})
    task = asyncio.create_task(run_device(OpcUaDriver(device), deliver,
                                          DeviceHealth("bench", "opcua")))
    try:
        await _measure(counter, seconds)
    finally:
        task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    return counter


async def _measure(counter: _Counter, seconds: float) -> None:
    await asyncio.sleep(2.0)  # connect, subscribe, initial values
    counter.measuring = True
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    counter.measuring = False
    counter.count = int(counter.count / (time.perf_counter() - start))  # per second


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


async def run(seconds: float) -> list[dict[str, Any]]:
    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port, ready),
                                                          daemon=True)
    server.start()
    try:
        ready.wait(60)
        endpoint = f"opc.tcp://127.0.0.1:{port}/bench"
        # Alternating rounds, best of each side (by count): one round proves little here.
        raws, ourses = [], []
        for _ in range(ROUNDS):
            raws.append(await _raw(endpoint, seconds))
            ourses.append(await _floorlink(endpoint, seconds))
        raw = max(raws, key=lambda measured: measured.count)
        ours = max(ourses, key=lambda measured: measured.count)
    finally:
        server.terminate()
        server.join(10)
    note = (f"{ITEMS} items at {RATE_HZ} Hz, offered {ITEMS * RATE_HZ:,}/s; best of {ROUNDS} "
            f"alternating rounds (floorlink {min(o.count for o in ourses):,}-"
            f"{max(o.count for o in ourses):,}, raw {min(r.count for r in raws):,}-"
            f"{max(r.count for r in raws):,})")
    rows = [{"figure": "OPC UA notifications/s", "floorlink": float(ours.count),
             "ceiling": float(raw.count), "ratio": ours.count / max(raw.count, 1), "note": note}]
    for label, share in (("p50", 0.5), ("p99", 0.99)):
        mine, base = _percentile(ours.latencies, share), _percentile(raw.latencies, share)
        rows.append({"figure": f"OPC UA write-to-sample latency {label} (ms)",
                     "floorlink": mine, "ceiling": base, "ratio": base / mine if mine else 0.0,
                     "note": "ratio: raw / floorlink (1 = as fast)"})
    rows.append({"figure": "OPC UA latency mean (ms)",
                 "floorlink": statistics.fmean(ours.latencies) * 1000 if ours.latencies else 0,
                 "ceiling": statistics.fmean(raw.latencies) * 1000 if raw.latencies else 0,
                 "ratio": 0.0, "note": ""})
    return rows
