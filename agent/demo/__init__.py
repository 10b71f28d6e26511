"""`floorlink demo`: the simulated press line and the agent, side by side on loopback.

Prints one line per event as it is derived, and says plainly whether the MQTT
broker was reached; with none listening, the backlog grows in the buffer and
drains, in order, once a broker appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..app import Agent
from ..eventline import print_event
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
    temporary = state_dir is None
    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="floorlink-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    config = demo_config(state_dir, ports)
    print(f"floorlink demo: a simulated press line (press-1 over OPC UA :{ports.opcua}, "
          f"press-2 over Modbus TCP :{ports.modbus})")
    print(f"  buffer  {config.buffer.path}")
    print(f"  status  http://{config.status.bind}:{config.status.port}/")
    uplink = config.uplinks[0]
    assert isinstance(uplink, MqttUplink)  # demo.yaml has the one MQTT uplink
    print(f"  events  MQTT {uplink.host}:{uplink.port}, topic {uplink.topic}")
    print("  Ctrl-C stops it.\n", flush=True)
    started = asyncio.Event()
    line = asyncio.create_task(
        run_line(seed=seed, opcua_port=ports.opcua, modbus_port=ports.modbus, started=started),
        name="simulated line")
    agent: Agent | None = None
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
        if agent is not None:
            _summarise(agent, state_dir, temporary)


def _summarise(agent: Agent, state_dir: Path, temporary: bool) -> None:
    """What the demo did, on Ctrl-C: events by type, delivered, still buffered, and
    where the buffer is (or that it is gone)."""
    counts = agent.pipeline.events_by_type if agent.pipeline is not None else {}
    health = agent.uplinks[0].health if agent.uplinks else None
    stats = agent.board.buffer
    buffered = sum(stats.backlog.get(health.uplink, {}).values()) if stats and health else 0
    total = sum(counts.values())
    print(f"\n== demo stopped: {total} events derived", flush=True)
    for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        print(f"     {count:>6}  {kind}")
    if health is not None:
        print(f"   {health.delivered} delivered to MQTT {health.target}; {buffered} still "
              "buffered")
    if temporary and buffered == 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        print(f"   removed {state_dir}: nothing in it was left to deliver", flush=True)
    else:
        print(f"   the buffer stays in {agent.config.buffer.path}; `floorlink demo "
              f"--state-dir {state_dir}` picks it up again", flush=True)


async def _report_uplink(agent: Agent) -> None:
    """Say plainly whether the broker is there, how big the backlog is, and when it drained.

    The drain is told from the uplink's own delivery count, not from sampling the backlog:
    a backlog of a few hundred events drains in milliseconds, between two looks."""
    await agent.ready.wait()
    await asyncio.sleep(3.0)  # give the first connection attempt its chance
    last_connected: bool | None = None
    last_report = 0.0
    away_backlog = 0  # the backlog last seen while the broker was away
    delivered_at_loss = 0
    owed = 0  # events the broker is owed from its absence, until delivered
    while True:
        health = agent.uplinks[0].health
        stats = agent.board.buffer  # refreshed every second by the agent's maintenance loop
        backlog = sum(stats.backlog.get(health.uplink, {}).values()) if stats else 0
        now = time.monotonic()
        if not health.connected:
            away_backlog = max(away_backlog, backlog)
        if health.connected != last_connected:
            if health.connected:
                owed = away_backlog
                print(f"== MQTT broker {health.target} reached: delivering "
                      f"{'the backlog of ' + str(owed) + ' events and ' if owed else ''}"
                      "every new event", flush=True)
            else:
                delivered_at_loss, away_backlog = health.delivered, backlog
                port = health.target.rsplit(":", 1)[1]
                print(f"== MQTT broker {health.target} NOT reachable: buffering every event "
                      f"in SQLite (backlog {backlog}); start one with `mosquitto -p {port}` "
                      f"and watch it drain (the agent tries again every {_retry(agent):g} s "
                      "at most; the status page says when next)", flush=True)
            last_connected, last_report = health.connected, now
        elif health.connected and owed and health.delivered - delivered_at_loss >= owed:
            print(f"== backlog drained: {health.delivered - delivered_at_loss} events "
                  "delivered in order, none lost", flush=True)
            owed, away_backlog = 0, 0
        elif not health.connected and now - last_report >= REPORT_INTERVAL:
            print(f"== still no MQTT broker at {health.target}: backlog {backlog} events, "
                  "none lost", flush=True)
            last_report = now
        await asyncio.sleep(0.25)


def _retry(agent: Agent) -> float:
    settings = agent.config.uplinks[0]
    return settings.reconnect_max if isinstance(settings, MqttUplink) else 10.0
