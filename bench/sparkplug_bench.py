"""Sparkplug benchmarks, each against its raw baseline in the same run.

* metrics/s: committed telemetry in a buffer (1,000 tags on 10 devices), through the
  forwarder and the Sparkplug uplink (the event's JSON, its metrics and aliases, a
  protobuf DDATA with the node's seq, paho at QoS 0) to Mosquitto; raw: plain paho
  publishing the same DDATAs, encoded by itself with the same protobuf runtime (alias,
  datatype, value, timestamp, seq), which is what a script of one's own must do. Twice:
  one telemetry event and one DDATA per value, and `telemetry.events: batch`, one event
  and one DDATA per device scan. Both count a message once paho has written it (QoS 0
  has no acknowledgement). Alternating rounds, best of each side.
* births at 5,000 tags (10 devices, every metric with a value): bytes on the wire for
  NBIRTH and the DBIRTHs, the largest message, and the time to build them; raw: the same
  metrics (name, alias, datatype, value, timestamp) encoded by the protobuf runtime
  directly, with no Quality property and nothing else.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .buffer_bench import _Mosquitto

DEVICES, TAGS_PER_DEVICE = 10, 100
VALUES = 20_000
BIRTH_DEVICES, BIRTH_TAGS = 10, 500  # 5,000 tags
ROUNDS = 3
WINDOW = 500


def _config_text(port: int, devices: int, tags: int) -> str:
    blocks = []
    for d in range(devices):
        tag_lines = "\n".join(f"      - {{name: t{t}, register: {40001 + t}, "
                              "publish: on_change}" for t in range(tags))
        blocks.append(f"  - id: plc{d}\n    protocol: modbus_tcp\n    host: 127.0.0.1\n"
                      f"    tags:\n{tag_lines}")
    device_text = "\n".join(blocks)
    return f"""
site: bench
agent: {{id: edge}}
devices:
{device_text}
buffer: {{path: buffer.db}}
uplinks:
  - {{id: scada, type: sparkplug, group_id: bench, port: {port}, max_rate: 0,
      max_inflight: {WINDOW}}}
"""


def _value(n: int, at: str) -> dict[str, Any]:
    """The n-th value: tags in turn across the devices, as scans deliver them."""
    device, tag = f"plc{n % DEVICES}", f"t{(n // DEVICES) % TAGS_PER_DEVICE}"
    return {"tag": f"{device}.{tag}", "device": device, "name": tag, "value": n % 60000,
            "quality": "good", "at": at}


async def _fill(path: Path, count: int, batch: bool) -> Any:
    """`count` values committed as telemetry events: one per value, or with `batch` one
    telemetry.batch event per device scan (TAGS_PER_DEVICE values of one device)."""
    from agent.events import Event, Lane
    from buffer import Outbox

    outbox = await Outbox.open(path, ["scada"])
    now = time.time()
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))
    events = []
    if batch:
        for scan in range(count // TAGS_PER_DEVICE):
            device = scan % DEVICES
            values = [_value(device + DEVICES * t, at) for t in range(TAGS_PER_DEVICE)]
            events.append(("telemetry.batch", f"plc{device}", {"values": values}))
    else:
        events = [("telemetry", f"plc{n % DEVICES}", _value(n, at)) for n in range(count)]
    for first in range(0, len(events), 5000):
        await outbox.commit([
            Event(id=f"{n:012d}-0000-7000-8000-000000000000", type=kind,
                  source="floorlink://bench/edge", subject=subject, time=now,
                  lane=Lane.TELEMETRY, sequence=n + 1, epoch=1, data=data)
            for n, (kind, subject, data) in enumerate(events[first:first + 5000], first)], {})
    return outbox, len(events)


async def _floorlink(workdir: Path, port: int, round_number: int, batch: bool) -> float:
    from agent.settings import load_config_text
    from agent.uplinks.forwarder import Forwarder
    from agent.uplinks.sparkplug.uplink import SparkplugNode

    outbox, events = await _fill(workdir / f"sp-{round_number}-{batch}.db", VALUES, batch)
    config = load_config_text(_config_text(port, DEVICES, TAGS_PER_DEVICE), "bench.yaml",
                              workdir)
    settings = config.uplinks[0]
    node = SparkplugNode(settings, config, outbox)  # type: ignore[arg-type]
    await node.start()
    while True:  # born: the events go out live, not held
        if node.health.details.get("born"):
            break
        await asyncio.sleep(0.01)
    forwarder = Forwarder(node, outbox, WINDOW, 0, settings.events)
    start = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    while True:
        if node.health.delivered >= events:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await node.close()
    await outbox.close()
    return VALUES / elapsed


def _raw(port: int, batch: bool) -> float:
    """Plain paho and protobuf: a DDATA per value, or with `batch` per device scan."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.uplinks.sparkplug.schema import Payload as payload_class

    per_message = TAGS_PER_DEVICE if batch else 1
    messages = VALUES // per_message
    written = threading.Event()
    count = 0

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal count
        count += 1
        if count == messages:
            written.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-sparkplug")
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    seq = 0
    now = int(time.time() * 1000)
    start = time.perf_counter()
    for m in range(messages):
        device = m % DEVICES
        payload = payload_class()
        payload.timestamp = now
        seq = (seq + 1) % 256
        payload.seq = seq
        for k in range(per_message):
            n = m * per_message + k
            metric = payload.metrics.add()
            metric.alias = device * TAGS_PER_DEVICE + (n // DEVICES) % TAGS_PER_DEVICE + 1
            metric.datatype = 6  # UInt16
            metric.int_value = n % 60000
            metric.timestamp = now
        client.publish(f"spBv1.0/bench/DDATA/edge/plc{device}", payload.SerializeToString(),
                       qos=0)
    written.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return VALUES / elapsed


def _births(workdir: Path) -> tuple[int, int, float, int]:
    """floorlink's births at 5,000 tags: total bytes, largest message, ms to build; and
    the raw encoding's total bytes."""
    from agent.settings import load_config_text
    from agent.uplinks.sparkplug import catalogue
    from agent.uplinks.sparkplug.metrics import Update
    from agent.uplinks.sparkplug.schema import Payload as payload_class
    from agent.uplinks.sparkplug.session import EdgeNode

    config = load_config_text(_config_text(1883, BIRTH_DEVICES, BIRTH_TAGS), "bench.yaml",
                              workdir)
    metrics = catalogue.build(config)
    edge = EdgeNode("bench", "edge", metrics, bd_seq=0)
    now = int(time.time() * 1000)
    edge.remember([Update(m.ref, 1234, now) for ms in metrics.devices.values() for m in ms])
    best = float("inf")
    messages = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        messages = edge.births(now, list(metrics.devices))
        best = min(best, time.perf_counter() - start)
    sizes = [len(m.payload) for m in messages]
    raw_total = 0
    for device_metrics in [metrics.node, *metrics.devices.values()]:
        payload = payload_class()
        payload.timestamp, payload.seq = now, 0
        for definition in device_metrics:
            metric = payload.metrics.add()
            metric.name, metric.alias, metric.timestamp = definition.name, definition.alias, now
            metric.datatype = 6
            metric.int_value = 1234
        raw_total += len(payload.SerializeToString())
    return sum(sizes), max(sizes), best * 1000, raw_total


async def run(seconds: float, rounds: int = ROUNDS) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="floorlink-bench-") as tmp:
        workdir = Path(tmp)
        broker = _Mosquitto(workdir)
        try:
            for batch in (False, True):
                ours, raws = [], []
                for round_number in range(rounds):
                    ours.append(await _floorlink(workdir, broker.port, round_number, batch))
                    raws.append(await asyncio.to_thread(_raw, broker.port, batch))
                shape = (f"telemetry.batch, a DDATA per scan of {TAGS_PER_DEVICE}" if batch
                         else "one telemetry event and one DDATA per value")
                rows.append({
                    "figure": "Sparkplug metrics/s, QoS 0" + (", batch" if batch else ""),
                    "floorlink": max(ours), "ceiling": max(raws),
                    "ratio": max(ours) / max(raws),
                    "note": f"{VALUES:,} committed values on {DEVICES} devices, {shape}: "
                            f"buffer -> forwarder -> uplink -> paho; raw: paho + protobuf, "
                            f"the same messages; best of {rounds} alternating rounds "
                            f"(floorlink {min(ours):,.0f}-{max(ours):,.0f}, raw "
                            f"{min(raws):,.0f}-{max(raws):,.0f})"})
        finally:
            broker.stop()
        total, largest, build_ms, raw_total = _births(workdir)
        rows.append({"figure": "Sparkplug births at 5,000 tags, bytes",
                     "floorlink": float(total), "ceiling": float(raw_total),
                     "ratio": raw_total / total,
                     "note": f"NBIRTH + {BIRTH_DEVICES} DBIRTHs; largest {largest:,} bytes; "
                             f"built in {build_ms:.1f} ms; raw: the same metrics encoded by "
                             "protobuf directly"})
    return rows
