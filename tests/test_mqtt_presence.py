"""What a plant's broker sees from the MQTT uplink, against a real Mosquitto:
the client id and persistent session, a unified-namespace topic, the event id as
an MQTT 5 user property, a retained birth message, the last will when the
connection dies uncleanly, and a retained current state per asset for a
dashboard that subscribes late."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from conftest import Broker, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from agent.events import Lane
from agent.settings import load_config_text
from agent.uplinks.mqtt import MqttPublisher
from buffer import StoredEvent

CONFIG = """
site: plant9
agent: {{id: edge}}
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: state, register: 40001}}]}}
assets:
  - id: press-1
    area: stamping
    line: l1
    state: {{tag: plc.state, map: {{1: running, 3: down}}}}
uplinks:
  - id: broker
    type: mqtt
    port: {port}
    protocol: "5"
    topic: "uns/{{site}}/{{area}}/{{line}}/{{asset}}/{{type}}"
    state_topic: "uns/{{site}}/{{area}}/{{line}}/{{asset}}/state"
    status_topic: "uns/{{site}}/_agents/{{agent}}"
"""


@dataclass
class Message:
    topic: str
    body: dict[str, Any]
    retained: bool
    properties: dict[str, str]


@dataclass
class Watcher:
    """An MQTT 5 subscriber that records the retain flag and user properties."""

    port: int
    name: str
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.name,
                             protocol=paho.MQTTv5)
        client.on_connect = lambda c, u, f, r, p: c.subscribe("uns/#", qos=1)
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        self.client = client
        wait_until(client.is_connected, 10, f"{self.name} to connect")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        props = dict(getattr(message.properties, "UserProperty", None) or [])
        with self.lock:
            self.messages.append(Message(message.topic, json.loads(message.payload),
                                         bool(message.retain), props))

    def on(self, topic: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def state_event(n: int, state: str) -> StoredEvent:
    body = json.dumps({"specversion": "1.0", "id": f"s{n}",
                       "type": "floorlink.machine.state_changed", "subject": "press-1",
                       "data": {"state": state}})
    return StoredEvent(n, f"s{n}", int(Lane.BUSINESS), "press-1",
                       "floorlink.machine.state_changed", body)


async def test_presence_topics_properties_and_late_subscribers(tmp_path: Path,
                                                               broker: Broker) -> None:
    config = load_config_text(CONFIG.format(port=broker.port), "config.yaml", tmp_path)
    uplink = MqttPublisher(config.uplinks[0], config)  # type: ignore[arg-type]
    early = Watcher(broker.port, "early")
    status = "uns/plant9/_agents/edge"
    try:
        await uplink.start()
        await asyncio.to_thread(wait_until, lambda: bool(early.on(status)), 10, "the birth")
        assert early.on(status)[0].body["state"] == "online"

        for n, state in enumerate(["running", "down", "running", "down"], 1):
            await asyncio.wait_for(uplink.submit(state_event(n, state)), 10)
        topic = "uns/plant9/stamping/l1/press-1/machine.state_changed"
        await asyncio.to_thread(wait_until, lambda: len(early.on(topic)) == 4, 10, "events")
        assert [m.properties["event-id"] for m in early.on(topic)] == ["s1", "s2", "s3", "s4"]
        assert not any(m.retained for m in early.on(topic))

        late = Watcher(broker.port, "late")  # a dashboard opened after the events
        state_topic = "uns/plant9/stamping/l1/press-1/state"
        await asyncio.to_thread(wait_until, lambda: bool(late.on(state_topic))
                                and bool(late.on(status)), 10, "retained state and status")
        [current] = late.on(state_topic)
        assert current.retained
        assert current.body["data"]["state"] == "down"
        assert current.body["id"] == "s4"
        assert not late.on(topic)  # events themselves are not retained
        late.stop()

        # The connection dies without a DISCONNECT: the broker publishes the will,
        # and the uplink reconnects and announces itself again.
        sock = uplink._client.socket() if uplink._client else None
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        await asyncio.to_thread(
            wait_until, lambda: [m.body["state"] for m in early.on(status)][-2:]
            == ["offline", "online"], 20, "the will, then a new birth")
        await asyncio.wait_for(uplink.submit(state_event(5, "running")), 10)
        await uplink.close()
        # A clean stop: the broker acknowledged the offline presence before close()
        # returned; the subscriber receives it on its own connection, a moment later.
        await asyncio.to_thread(
            wait_until, lambda: [m.body["state"] for m in early.on(status)][-1] == "offline",
            5, "the offline presence of a clean stop")
    finally:
        await uplink.close()
        early.stop()
    log = (broker.workdir / "mosquitto.log").read_text()
    # A stable client id, with clean start off: the session survives reconnects.
    assert "as floorlink-edge (p5, c0, k30)" in log, log[-2000:]
