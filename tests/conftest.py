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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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


# The collector's subscriber, in a process of its own as a real consumer is: in the
# test's process its paho thread would compete for the GIL with an uplink under test
# that runs on the event loop, and fall seconds behind the broker.
COLLECTOR_SCRIPT = """
import json, sys
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, sink_path, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sink = open(sink_path, "a", buffering=1)
client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{port}",
                     clean_session=False)
if user:
    client.username_pw_set(user, password)
client.on_connect = lambda c, u, f, r, p: c.subscribe("floorlink/#", qos=1)
client.on_subscribe = lambda c, u, mid, codes, p: sink.write(json.dumps(["", None]) + "\\n")
def on_message(c, u, message):
    try:
        json.loads(message.payload)
    except ValueError:
        return
    sink.write(json.dumps([message.topic, message.payload.decode()]) + "\\n")
client.on_message = on_message
client.reconnect_delay_set(0.2, 1)
client.connect("127.0.0.1", port)
client.loop_forever()
"""


@dataclass
class Collector:
    """An MQTT subscriber with a persistent session: every QoS 1 message, in arrival order.
    It runs in a child process and writes what it receives to a file, read here."""

    port: int
    credentials: tuple[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._received: list[tuple[str, dict[str, Any]]] = []
        self._read_to = 0
        self._subscribed = False
        handle, sink = tempfile.mkstemp(prefix=f"collector-{self.port}-")
        os.close(handle)
        self._sink = Path(sink)
        user, password = self.credentials or ("", "")
        self._proc = subprocess.Popen([sys.executable, "-c", COLLECTOR_SCRIPT, str(self.port),
                                       str(sink), user, password])
        wait_until(self._has_subscribed, 15, "the collector to subscribe")

    def _has_subscribed(self) -> bool:
        self._read()
        return self._subscribed

    def _read(self) -> None:
        with self.lock:
            with self._sink.open("rb") as sink:
                sink.seek(self._read_to)
                chunk = sink.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self._read_to += len(complete)
            for line in complete.splitlines():
                topic, payload = json.loads(line)
                if payload is None:
                    self._subscribed = True
                else:
                    self._received.append((topic, json.loads(payload)))

    @property
    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        self._read()
        with self.lock:
            return list(self._received)

    def events(self) -> list[dict[str, Any]]:
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
        self._proc.terminate()
        self._proc.wait(10)
        self._sink.unlink(missing_ok=True)


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    instance = Collector(broker.port)
    instance.start()
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


# npm's sparkplug-payload, the Sparkplug tests' independent codec (tests/sparkplug_peer.py).
@pytest.fixture(scope="module")
def node_decoder() -> Iterator[Any]:
    from sparkplug_peer import NodeCodec

    codec = NodeCodec()
    yield codec
    codec.close()


@pytest.fixture(scope="module")
def node_encoder() -> Iterator[Any]:
    from sparkplug_peer import NodeCodec

    codec = NodeCodec(encode=True)
    yield codec
    codec.close()
