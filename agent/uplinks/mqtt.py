"""MQTT uplink on paho-mqtt: QoS 1, an event counts as delivered only on its PUBACK.

paho runs its network loop in its own thread; nothing of ours runs there. Its
callbacks hop into the event loop with `call_soon_threadsafe`. paho keeps every
unacknowledged QoS 1 message and re-sends it after a reconnect, so a broker
outage needs nothing from us but patience; after an agent restart the buffer's
cursor re-sends whatever was never acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from buffer import StoredEvent

from .. import __version__
from ..errors import UplinkRejected
from ..settings.models import Config, MqttUplink
from .base import UplinkHealth
from .topics import TopicRenderer

log = logging.getLogger("floorlink.mqtt")


class MqttPublisher:
    def __init__(self, settings: MqttUplink, config: Config) -> None:
        self.id = settings.id
        self.settings = settings
        self.health = UplinkHealth(settings.id, "mqtt", f"{settings.host}:{settings.port}")
        self._topics = TopicRenderer.for_config(settings.topic, config)
        self._status_topic = settings.status_topic.format(
            site=config.site, agent=config.agent.id, area="_", line="_", asset="_",
            type="status", lane="_")
        self._client_id = settings.client_id or f"floorlink-{config.agent.id}"
        self._agent_id = config.agent.id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._client: paho.Client | None = None
        self._refused_logged: str | None = None
        self._closing = False
        # PUBACKs gathered on paho's thread, handed over in bursts: one loop wake-up
        # per burst instead of one per message keeps the two threads from ping-ponging.
        self._acks: deque[tuple[int, bool, str]] = deque()
        self._acks_wakeup_pending = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        v5 = self.settings.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else False,
        )
        client.max_inflight_messages_set(self.settings.max_inflight)
        # Must exceed the forwarder's window so paho never refuses a publish.
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if self.settings.username:
            password = self.settings.password.get_secret_value() if self.settings.password else None
            client.username_pw_set(self.settings.username, password)
        client.will_set(self._status_topic, self._presence("offline"), qos=1, retain=True)
        client.on_connect = self._paho_on_connect
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        client.on_connect_fail = self._paho_on_connect_fail
        self._client = client
        if v5:
            # Keep the broker-side session for an hour across our reconnects.
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            client.connect_async(self.settings.host, self.settings.port,
                                 keepalive=int(self.settings.keepalive), clean_start=False,
                                 properties=properties)
        else:
            client.connect_async(self.settings.host, self.settings.port,
                                 keepalive=int(self.settings.keepalive))
        client.loop_start()

    def submit(self, event: StoredEvent) -> asyncio.Future[None]:
        assert self._client is not None
        assert self._loop is not None
        properties = None
        if self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("event-id", event.id)]
            properties.ContentType = "application/cloudevents+json"
        future: asyncio.Future[None] = self._loop.create_future()
        try:
            info = self._client.publish(self._topics.render(event), event.body,
                                        qos=self.settings.qos, properties=properties)
        except ValueError as exc:  # paho refuses an oversized payload or an invalid topic
            future.set_exception(UplinkRejected(f"not publishable: {exc}"))
            return future
        # paho's PUBACK callback reaches us via call_soon_threadsafe, so it can only run
        # after this registration: no race between publish() and the acknowledgement.
        self._waiting[info.mid] = future
        return future

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        if client.is_connected():
            info = client.publish(self._status_topic, self._presence("offline"), qos=1, retain=True)
            try:
                await asyncio.get_running_loop().run_in_executor(None, info.wait_for_publish, 2.0)
            except (RuntimeError, ValueError) as exc:
                log.debug("offline presence not confirmed: %s", exc)
            client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)

    def _presence(self, state: str) -> str:
        return json.dumps({"state": state, "agent": self._agent_id, "version": __version__,
                           "time": time.time()})

    # ------------------------------------------------ paho thread -> event loop

    def _hop(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _paho_on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                         reason: Any, properties: Any) -> None:
        self._hop(self._on_connect, bool(reason.is_failure), str(reason))

    def _paho_on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._hop(self._on_unreachable)

    def _paho_on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                            reason: Any, properties: Any) -> None:
        self._hop(self._on_disconnect, str(reason))

    def _paho_on_publish(self, client: paho.Client, userdata: Any, mid: int,
                         reason: Any, properties: Any) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        self._acks.append((mid, failed, str(reason) if failed else ""))
        if not self._acks_wakeup_pending:
            self._acks_wakeup_pending = True
            self._hop(self._on_acks)

    # ------------------------------------------------ event loop side

    def _on_connect(self, failed: bool, reason: str) -> None:
        target = self.health.target
        if failed:
            # Bad credentials or not authorised: paho retries with its growing delay
            # (up to 30 s); say so once per distinct reason instead of on every attempt.
            self.health.last_error = f"broker {target} refused the connection: {reason}"
            if self._refused_logged != reason:
                log.error("%s: check username/password and the broker's ACL",
                          self.health.last_error)
                self._refused_logged = reason
            return
        self._refused_logged = None
        self.health.connected, self.health.since = True, time.time()
        log.info("MQTT broker %s reached (uplink %s)", target, self.id)
        if self._client is not None:
            self._client.publish(self._status_topic, self._presence("online"), qos=1, retain=True)

    def _on_unreachable(self) -> None:
        error = f"MQTT broker {self.health.target} not reachable"
        if self.health.last_error != error:
            log.warning("%s; buffering until it is", error)
        self.health.last_error = error

    def _on_disconnect(self, reason: str) -> None:
        if self.health.connected and not self._closing:
            log.warning("MQTT broker %s lost (%s); buffering", self.health.target, reason)
            self.health.connected, self.health.since = False, time.time()
            self.health.last_error = f"disconnected: {reason}"

    def _on_acks(self) -> None:
        # Clear the flag before draining: an ack appended meanwhile either is drained
        # here or schedules its own wake-up; none is left behind.
        self._acks_wakeup_pending = False
        while self._acks:
            self._on_ack(*self._acks.popleft())

    def _on_ack(self, mid: int, failed: bool, reason: str) -> None:
        future = self._waiting.pop(mid, None)
        if future is None or future.done():
            return  # presence messages are not tracked
        if failed:
            future.set_exception(UplinkRejected(f"broker refused the message: {reason}",
                                                answer=f"PUBACK reason: {reason}"))
        else:
            future.set_result(None)
