"""Real peers for the tests: Mosquitto on a free loopback port, the simulated line
(real OPC UA and Modbus TCP servers) in its own process, and the agent in its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """A Mosquitto of our own, persistent so a SIGTERM restart keeps sessions."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {workdir}/\n"
            "max_queued_messages 100000\nautosave_interval 1\n"
            # Started as root, mosquitto would switch to its own user, which cannot enter
            # pytest's private temporary folders.
            + ("user root\n" if os.geteuid() == 0 else ""))
        self.conf = conf

    def start(self) -> None:
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                         stderr=log)
        wait_until(lambda: port_open(self.port), 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGTERM: mosquitto saves its state
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    instance = Broker(workdir)
    instance.start()
    yield instance
    instance.stop()


@dataclass
class Collector:
    """An MQTT subscriber with a persistent session: every QoS 1 message, in arrival order."""

    port: int
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    credentials: tuple[str, str] | None = None

    def start(self) -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{self.port}",
                             clean_session=False)
        if self.credentials:
            client.username_pw_set(*self.credentials)
        client.on_connect = lambda c, u, f, r, p: c.subscribe("floorlink/#", qos=1)
        client.on_message = self._on_message
        client.reconnect_delay_set(0.2, 1)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        self.client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        with self.lock:
            self.messages.append((message.topic, body))

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for topic, body in self.messages if "specversion" in body]

    def unique_events(self) -> list[dict[str, Any]]:
        seen: set[str] = set()
        out = []
        for event in self.events():
            if event["id"] not in seen:
                seen.add(event["id"])
                out.append(event)
        return out

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    instance = Collector(broker.port)
    instance.start()
    wait_until(lambda: instance.client.is_connected(), 10, "the collector to connect")
    yield instance
    instance.stop()


def floorlink_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


class Line:
    """The simulated line in its own process, writing its own ground truth."""

    def __init__(self, workdir: Path, seed: int, duration: float) -> None:
        self.opcua_port, self.modbus_port = free_port(), free_port()
        self.truth = workdir / "truth.jsonl"
        with (workdir / "simulator.log").open("ab") as log:
            self.proc = subprocess.Popen(
                floorlink_command("simulate", "--seed", str(seed), "--opcua-port",
                                  str(self.opcua_port), "--modbus-port", str(self.modbus_port),
                                  "--truth", str(self.truth), "--duration", str(duration),
                                  "--wait-for-signal"),
                stdout=log, stderr=log, cwd=REPO)
        wait_until(lambda: port_open(self.opcua_port) and port_open(self.modbus_port), 30,
                   "the simulated line to listen")

    def go(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def records(self) -> list[dict[str, Any]]:
        if not self.truth.exists():
            return []
        return [json.loads(line) for line in self.truth.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class AgentProcess:
    def __init__(self, workdir: Path, config_text: str) -> None:
        self.config = workdir / "config.yaml"
        self.config.write_text(config_text)
        self.log_path = workdir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(floorlink_command("run", "-c", str(self.config)),
                                         stdout=log, stderr=log, cwd=REPO, env=env)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye; whatever was not committed is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


LINE_CONFIG = """
site: test-plant
agent: {{id: test-edge}}
devices:
  - id: press1-plc
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:{opcua_port}/floorlink/sim
    publishing_interval: 100ms
    tags:
      - {{name: state, node: "nsu=urn:floorlink:sim;s=Press1.State"}}
      - {{name: good, node: "nsu=urn:floorlink:sim;s=Press1.GoodCount"}}
      - {{name: scrap, node: "nsu=urn:floorlink:sim;s=Press1.ScrapCount"}}
      - {{name: fault, node: "nsu=urn:floorlink:sim;s=Press1.FaultCode"}}
      - {{name: hold, node: "nsu=urn:floorlink:sim;s=Press1.QualityHold"}}
      - {{name: hold_reason, node: "nsu=urn:floorlink:sim;s=Press1.HoldReason"}}
      - {{name: lot, node: "nsu=urn:floorlink:sim;s=Press1.Lot"}}
      - {{name: work_order, node: "nsu=urn:floorlink:sim;s=Press1.WorkOrder"}}
  - id: press2-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {modbus_port}
    poll_interval: 100ms
    tags:
      - {{name: state, register: 40001}}
      - {{name: good, register: 40002, type: uint32}}
      - {{name: scrap, register: 40004, type: uint32}}
      - {{name: fault, register: 40006}}
      - {{name: hold, register: 40007, type: bool, bit: 0}}
      - {{name: hold_reason, register: 40008}}
      - {{name: lot, table: holding_register, address: 10, type: string, length: 8}}
      - {{name: work_order, table: holding_register, address: 20, type: string, length: 8}}
assets:
  - id: press-1
    area: stamping
    line: line-1
    state: {{tag: press1-plc.state, map: {{1: running, 2: idle, 3: down, 4: setup}}}}
    counters: {{good: press1-plc.good, scrap: press1-plc.scrap}}
    reason: {{tag: press1-plc.fault, texts: {{101: Hydraulic pressure loss, 102: Die jam}}}}
    quality_hold: {{flag: press1-plc.hold, lot: press1-plc.lot, reason: press1-plc.hold_reason}}
    work_order: press1-plc.work_order
    downtime: {{micro_stop: {micro_stop}}}
    production: {{interval: 2s}}
  - id: press-2
    area: stamping
    line: line-1
    state: {{tag: press2-plc.state, map: {{1: running, 2: idle, 3: down, 4: setup}}}}
    counters: {{good: press2-plc.good, scrap: press2-plc.scrap}}
    reason: {{tag: press2-plc.fault}}
    quality_hold: {{flag: press2-plc.hold, lot: press2-plc.lot, reason: press2-plc.hold_reason}}
    work_order: press2-plc.work_order
    downtime: {{micro_stop: {micro_stop}}}
    production: {{interval: 2s}}
buffer: {{path: {buffer}}}
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {mqtt_port}, max_inflight: 20}}
status: {{port: {status_port}}}
"""
