"""`floorlink demo`: the simulated press line and the agent, side by side on loopback.

Prints one line per event as it is derived, and says plainly whether the MQTT
broker was reached; with none listening, the backlog grows in the buffer and
drains, in order, once a broker appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..app import Agent
from ..events import Event
from ..settings import Config, load_config_text
from ..settings.models import MqttUplink, OpcUaDevice
from ..simulator.servers import run_line

REPORT_INTERVAL = 10.0


def demo_config_text() -> str:
    return resources.files("agent.demo").joinpath("demo.yaml").read_text("utf-8")


@dataclass(frozen=True)
class DemoPorts:
    opcua: int = 4840
    modbus: int = 5020
    mqtt: int = 1883
    status: int = 8080


def demo_config(state_dir: Path, ports: DemoPorts) -> Config:
    config = load_config_text(demo_config_text(), "demo.yaml (built in)", state_dir)
    devices = [
        d.model_copy(update={"endpoint": f"opc.tcp://127.0.0.1:{ports.opcua}/floorlink/sim"})
        if isinstance(d, OpcUaDevice) else d.model_copy(update={"port": ports.modbus})
        for d in config.devices]
    return config.model_copy(update={
        "devices": devices,
        "uplinks": [u.model_copy(update={"port": ports.mqtt}) for u in config.uplinks],
        "status": config.status.model_copy(update={"port": ports.status}),
    })


async def run_demo(seed: int = 7, state_dir: Path | None = None,
                   ports: DemoPorts = DemoPorts()) -> None:
    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="floorlink-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    config = demo_config(state_dir, ports)
    print(f"floorlink demo: a simulated press line (press-1 over OPC UA :{ports.opcua}, "
          f"press-2 over Modbus TCP :{ports.modbus})")
    print(f"  buffer  {config.buffer.path}")
    print(f"  status  http://{config.status.bind}:{config.status.port}/status")
    uplink = config.uplinks[0]
    assert isinstance(uplink, MqttUplink)  # demo.yaml has the one MQTT uplink
    print(f"  events  MQTT {uplink.host}:{uplink.port}, topic {uplink.topic}")
    print("  Ctrl-C stops it.\n", flush=True)
    started = asyncio.Event()
    line = asyncio.create_task(
        run_line(seed=seed, opcua_port=ports.opcua, modbus_port=ports.modbus, started=started),
        name="simulated line")
    try:
        await started.wait()
        agent = Agent(config, on_event=print_event)
        async with asyncio.TaskGroup() as group:
            group.create_task(agent.run())
            group.create_task(_report_uplink(agent))
    finally:
        # The line outlives the agent, so the agent's sessions close before the servers do.
        line.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await line


def print_event(event: Event) -> None:
    print(f"{time.strftime('%H:%M:%S', time.localtime(event.time))}  {event.subject:<8} "
          f"{event.type:<22} {_describe(event)}", flush=True)


def _describe(event: Event) -> str:
    d = event.data
    kind = event.type
    if kind == "machine.state_changed":
        after = f" after {d['previous_duration_s']:.1f}s" if d["previous_duration_s"] else ""
        return f"{d['previous_state'] or '(first seen)'} -> {d['state']}{after}"
    if kind == "downtime.started":
        return f"{d['reason']} (code {d['reason_code']}), work order {d['work_order']}"
    if kind == "downtime.ended":
        return f"{d['duration_s']:.1f}s of {d['reason']}, work order {d['work_order']}"
    if kind == "production.confirmed":
        stops = f", {d['micro_stops']} micro-stops" if d.get("micro_stops") else ""
        return (f"+{d['good']} good +{d['scrap']} scrap -> {d['work_order']} totals "
                f"{d['good_total']} good / {d['scrap_total']} scrap{stops}")
    if kind == "quality.hold_raised":
        return f"HOLD lot {d['lot']}: {d['reason']} (work order {d['work_order']})"
    if kind == "quality.hold_released":
        return f"released lot {d['lot']}"
    if kind == "maintenance.requested":
        return (f"{d['reason']} (code {d['fault_code']}) {d['occurrences']} times "
                f"since {d['first_seen'][11:19]}")
    if kind == "downtime.micro_stop":
        return f"{d['duration_s']:.1f}s of {d['reason']}"
    return str(d)


async def _report_uplink(agent: Agent) -> None:
    """Say plainly whether the broker is there, how big the backlog is, and when it drained."""
    await agent.ready.wait()
    await asyncio.sleep(3.0)  # give the first connection attempt its chance
    last_connected: bool | None = None
    last_report = 0.0
    draining = False
    while True:
        health = agent.uplinks[0].health
        stats = agent.board.buffer  # refreshed every second by the agent's maintenance loop
        backlog = sum(stats.backlog.get(health.uplink, {}).values()) if stats else 0
        now = time.monotonic()
        if health.connected != last_connected:
            if health.connected:
                print(f"== MQTT broker {health.target} reached: delivering "
                      f"{'the backlog of ' + str(backlog) + ' events and ' if backlog else ''}"
                      "every new event", flush=True)
                draining = backlog > 0
            else:
                port = health.target.rsplit(":", 1)[1]
                print(f"== MQTT broker {health.target} NOT reachable: buffering every event "
                      f"in SQLite (backlog {backlog}); start one with `mosquitto -p {port}` "
                      "and watch it drain", flush=True)
            last_connected, last_report = health.connected, now
        elif health.connected and draining and backlog == 0:
            print(f"== backlog drained: {health.delivered} events delivered in order, "
                  "none lost", flush=True)
            draining = False
        elif not health.connected and now - last_report >= REPORT_INTERVAL:
            print(f"== still no MQTT broker at {health.target}: backlog {backlog} events, "
                  "none lost", flush=True)
            last_report = now
        await asyncio.sleep(1.0)
