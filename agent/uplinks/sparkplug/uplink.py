"""The Sparkplug B uplink: the agent as an Edge Node (Sparkplug 3.0), on paho.

Delivery is the specification's, not floorlink's (DESIGN.md, invariant 9): births and
data go at QoS 0, so an event counts as sent once paho has written it to the socket. What
floorlink adds stays within that: an event taken from the buffer while no session is
born waits (the forwarder's window bounds how many; the rest wait in the buffer) and goes
out after the births, flagged historical; an event written to a connection that then
drops is given back to the forwarder, which offers it again.

Sessions: a clean MQTT session (the specification requires it) whose will is the NDEATH
carrying the session's bdSeq. On CONNACK: subscribe to this node's NCMD, then NBIRTH
(seq 0) and a DBIRTH per device that is not known to be offline. `device.status` events
become DDEATH and DBIRTH. NCMD `Node Control/Rebirth` publishes the births again: it is
the one command floorlink accepts; it never writes to a PLC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import paho.mqtt.client as paho

from buffer import StoredEvent

from ...errors import UplinkRejected, UplinkUnavailable
from ...events import short_type
from ...settings.models import Config
from ...settings.sparkplug import SparkplugUplink
from ..base import address, broker_health
from ..mqtt_link import LoopDrivenClient, new_client
from ..tls import client_context
from . import catalogue, metrics
from .payload import decode
from .session import EdgeNode, Message, RebirthNeeded
from .topics import node_topic

log = logging.getLogger("floorlink.sparkplug")

CLOSE_WAIT = 2.0  # the NDEATH and the DISCONNECT, within the agent's stop budget


def _now_ms() -> int:
    return int(time.time() * 1000)


class SparkplugNode:
    def __init__(self, settings: SparkplugUplink, config: Config) -> None:
        self.id = settings.id
        self.settings = settings
        self._endpoints = settings.endpoints()
        self.health = broker_health(settings.id, "sparkplug", self._endpoints)
        self.group = settings.group_id
        self.node_id = settings.edge_node_id or config.agent.id
        self.edge = EdgeNode(self.group, self.node_id, catalogue.build(config), bd_seq=0)
        self._offline: set[str] = set()  # devices whose last status was offline
        self._client_id = settings.client_id or f"floorlink-{config.agent.id}-sparkplug"
        self._context = client_context(settings.tls) if settings.tls else None
        self._born = False
        self._accepted = False  # the current connection had its CONNACK
        self._held: list[tuple[StoredEvent, asyncio.Future[None]]] = []
        self._waiting: dict[int, asyncio.Future[None]] = {}  # last mid of an event -> it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._link: LoopDrivenClient | None = None
        self._closing = False
        self.births = self.rebirths = 0
        self._show()

    # ------------------------------------------------------------ the Uplink protocol

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = new_client(self.settings, self._client_id, paho.MQTTv311, True, self._context)
        client.on_connect = self._paho_on_connect
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        client.on_message = self._paho_on_message
        self._client = client
        self._aim(0)
        self._link = LoopDrivenClient(client, self.settings.reconnect_max, self._unreachable,
                                      self._waiting_for, servers=len(self._endpoints),
                                      aim=self._aim)
        self._link.start()

    def submit(self, event: StoredEvent) -> asyncio.Future[None]:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if not self._born:
            self._held.append((event, future))  # sent after the births, as historical
        else:
            self._send(event, future, historical=False)
        return future

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        assert self._link is not None
        if client.is_connected():
            death = self.edge.death(_now_ms())  # a clean stop: the NDEATH, then DISCONNECT
            client.publish(death.topic, death.payload, qos=0)
            client.disconnect()
            try:
                await asyncio.wait_for(self._link.wait_closed(), CLOSE_WAIT)
            except TimeoutError:
                log.debug("the Sparkplug connection did not close within %g s", CLOSE_WAIT)
        await self._link.stop()
        self._fail_waiting("the uplink stopped")

    # ------------------------------------------------------------ sessions

    def _aim(self, index: int) -> None:
        """Point the client at server `index`, with this session's NDEATH as its will."""
        assert self._client is not None
        host, port = self._endpoints[index]
        self.health.target = address(host, port)
        death = self.edge.death(_now_ms())
        self._client.will_set(death.topic, death.payload, qos=1, retain=False)
        self._client.connect_async(host, port, keepalive=int(self.settings.keepalive))

    def _on_connect(self, failed: bool, reason: str) -> None:
        if failed:
            self.health.last_error = (f"broker {self.health.target} refused the connection: "
                                      f"{reason}")
            log.error("%s: check the username, password and the broker's ACL",
                      self.health.last_error)
            return
        assert self._client is not None
        if self._link is not None:
            self._link.accepted()
        self._accepted = True
        self.health.connected, self.health.since = True, time.time()
        self.health.last_error = self.health.next_attempt_at = None
        log.info("Sparkplug broker %s reached (uplink %s, bdSeq %d)", self.health.target,
                 self.id, self.edge.bd_seq)
        self._client.subscribe(node_topic(self.group, "NCMD", self.node_id), qos=1)
        self._publish_births()
        held, self._held = self._held, []
        for event, future in held:
            if not future.done():
                self._send(event, future, historical=True)

    def _publish_births(self) -> None:
        self._born = True
        self._publish(self._births(_now_ms()))

    def _births(self, now: int) -> list[Message]:
        """NBIRTH and the DBIRTHs of the devices not known to be offline."""
        self.births += 1
        online = [d for d in self.edge.catalogue.devices if d not in self._offline]
        messages = self.edge.births(now, online)
        self._show()
        return messages

    def _on_disconnect(self, reason: str) -> None:
        self._born = False
        if self._accepted:
            self._accepted = False
            # A new session is a new bdSeq; the next CONNECT's will carries it.
            self.edge.bd_seq = (self.edge.bd_seq + 1) % 256
        self._fail_waiting(f"connection lost ({reason}) before the message was written")
        if self._closing:
            return
        if self.health.connected:
            log.warning("Sparkplug broker %s lost (%s); holding values", self.health.target,
                        reason)
            self.health.disconnects += 1
            self.health.connected, self.health.since = False, time.time()
            self.health.last_error = f"disconnected: {reason}"
        self._show()

    def _fail_waiting(self, why: str) -> None:
        """QoS 0 messages paho had not written when the connection went are dropped by
        paho: their events go back to the forwarder, which offers them again."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(UplinkUnavailable(why))

    # ------------------------------------------------------------ events to messages

    def _send(self, event: StoredEvent, future: asyncio.Future[None], historical: bool) -> None:
        try:
            messages = self._messages(event, historical)
        except (ValueError, KeyError, TypeError) as exc:
            future.set_exception(UplinkRejected(f"not a Sparkplug metric: {exc}"))
            return
        if not messages:
            future.set_result(None)  # nothing in it for Sparkplug
            return
        mid = self._publish(messages)
        if mid is None:
            future.set_exception(UplinkUnavailable("not connected"))
        else:
            self._waiting[mid] = future

    def _messages(self, event: StoredEvent, historical: bool) -> list[Message]:
        body = json.loads(event.body)
        kind, data = short_type(event.type), body.get("data") or {}
        now = _now_ms()
        at = metrics.event_time_ms(body.get("time"), now)
        if kind == "device.status":
            return self._device_status(data, now)
        live: list[metrics.Update] = []
        for update in metrics.updates(kind, event.subject, at, data):
            if self.edge.device_of(update.ref) in self._offline:
                self.edge.remember([update])  # it waits for the device's next birth
            else:
                live.append(update)
        try:
            return self.edge.data(live, now, historical=historical)
        except RebirthNeeded as exc:
            log.info("Sparkplug uplink %s: born again (%s)", self.id, exc)
            self.rebirths += 1
            return self._births(now)

    def _device_status(self, data: dict[str, Any], now: int) -> list[Message]:
        device = data["device"]
        if device not in self.edge.catalogue.devices:
            return []
        if data["status"] == "offline":
            if device in self._offline:
                return []
            self._offline.add(device)
            return [self.edge.device_death(device, now)]
        if device not in self._offline:
            return []
        self._offline.discard(device)
        return [self.edge.device_birth(device, now)]

    def _publish(self, messages: list[Message]) -> int | None:
        """Publish in order at QoS 0; the mid of the last, or None when not connected."""
        if self._client is None:
            return None
        mid = None
        for message in messages:
            info = self._client.publish(message.topic, message.payload, qos=0)
            if info.rc != paho.MQTT_ERR_SUCCESS and info.rc != paho.MQTT_ERR_NO_CONN:
                raise ValueError(f"paho refused the message: {paho.error_string(info.rc)}")
            mid = info.mid
        return mid

    # ------------------------------------------------------------ commands

    def _on_command(self, topic: str, payload: bytes) -> None:
        try:
            received = decode(payload)
        except ValueError as exc:
            log.warning("Sparkplug uplink %s: an NCMD on %s was not a payload (%s); ignored",
                        self.id, topic, exc)
            return
        rebirth_alias = self.edge.alias(catalogue.REBIRTH)
        for metric in received.metrics:
            if (metric.name == catalogue.REBIRTH or metric.alias == rebirth_alias) and (
                    metric.value is True):
                if self._born:
                    log.info("Sparkplug uplink %s: rebirth requested by a host", self.id)
                    self._publish(self._births(_now_ms()))
                continue
            log.warning("Sparkplug uplink %s: NCMD %s ignored: floorlink takes only %s and "
                        "never writes to a PLC", self.id, metric.name or metric.alias,
                        catalogue.REBIRTH)

    # ------------------------------------------------------------ paho, on the loop

    def _paho_on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                         reason: Any, properties: Any) -> None:
        self._on_connect(bool(reason.is_failure), str(reason))

    def _paho_on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                            reason: Any, properties: Any) -> None:
        self._on_disconnect(str(reason))

    def _paho_on_publish(self, client: paho.Client, userdata: Any, mid: int,
                         reason: Any, properties: Any) -> None:
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _paho_on_message(self, client: paho.Client, userdata: Any,
                         message: paho.MQTTMessage) -> None:
        self._on_command(message.topic, bytes(message.payload))

    def _unreachable(self, error: BaseException) -> None:
        message = f"MQTT broker {self.health.target} not reachable"
        if self.health.last_error != message:
            log.warning("%s (Sparkplug uplink %s); holding values", message, self.id)
        self.health.last_error = message

    def _waiting_for(self, delay: float) -> None:
        if not self._closing:
            self.health.next_attempt_at = time.time() + delay

    def _show(self) -> None:
        self.health.details = {"group": self.group, "edge_node": self.node_id,
                               "bdSeq": self.edge.bd_seq, "born": self._born,
                               "births": self.births, "rebirths": self.rebirths,
                               "offline_devices": sorted(self._offline)}

