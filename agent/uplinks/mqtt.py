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
import random
import ssl
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
from . import certificates
from .base import UplinkHealth
from .takeover import SHORT_SECONDS, TakeoverWatch
from .tls import client_context, explain, handshake_error
from .topics import TopicRenderer

log = logging.getLogger("floorlink.mqtt")

# While messages are in flight, how often the loop collects their PUBACKs (seconds).
ACK_COLLECT_MIN = 0.002
ACK_COLLECT_MAX = 0.05


class MqttPublisher:
    def __init__(self, settings: MqttUplink, config: Config) -> None:
        self.id = settings.id
        self.settings = settings
        self.health = UplinkHealth(settings.id, "mqtt", f"{settings.host}:{settings.port}")
        self._topics = TopicRenderer.for_config(settings.topic, config)
        self._state_topics = (TopicRenderer.for_config(settings.state_topic, config)
                              if settings.state_topic else None)
        self._context = client_context(settings.tls) if settings.tls else None
        self._certificates = [status for which, path in
                              (settings.tls.files().items() if settings.tls else ())
                              for status in certificates.from_file(path, settings.id, which)]
        self._explaining = False
        self._status_topic = settings.status_topic.format(
            site=config.site, agent=config.agent.id, area="_", line="_", asset="_",
            type="status", lane="_")
        self._client_id = settings.client_id or f"floorlink-{config.agent.id}"
        self._agent_id = config.agent.id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._client: paho.Client | None = None
        self._refused_logged: str | None = None
        self._takeovers = TakeoverWatch()
        self._closing = False
        # PUBACKs gathered on paho's thread and collected by the loop on a timer while
        # anything is in flight (see _collect_acks): no wake-up of the loop per message.
        self._acks: deque[tuple[int, bool, str]] = deque()
        self._collecting: asyncio.TimerHandle | None = None
        self._collect_delay = ACK_COLLECT_MIN
        # paho's reconnect delay, mirrored to show the next attempt: it starts at
        # _min_delay, doubles after each failed attempt up to reconnect_max, and starts
        # over once a CONNACK accepted us. Each agent starts from its own random delay,
        # so a fleet does not reconnect in lockstep after the broker restarts.
        self._min_delay = random.uniform(0.5, 1.5)
        self._delay: float | None = None

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
        # Each agent starts its doubling from its own random delay, so a fleet does not
        # reconnect in lockstep after the broker restarts.
        client.reconnect_delay_set(min_delay=self._min_delay,  # type: ignore[arg-type]
                                   max_delay=self.settings.reconnect_max)  # type: ignore[arg-type]
        if self._context is not None:
            assert self.settings.tls is not None
            client.tls_set_context(self._context)
            if self.settings.tls.insecure:
                log.warning("uplink %s: TLS certificate verification is OFF (tls.insecure); "
                            "anyone able to answer on %s receives the plant's data",
                            self.id, self.health.target)
        certificates.warn_if_expiring(self._certificates)
        self.health.certificates = [c.view() for c in self._certificates]
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
            if self._state_topics is not None and event.type.endswith("machine.state_changed"):
                # Retained, so a dashboard that subscribes later sees the state right away.
                self._client.publish(self._state_topics.render(event), event.body,
                                     qos=self.settings.qos, retain=True)
        except ValueError as exc:  # paho refuses an oversized payload or an invalid topic
            future.set_exception(UplinkRejected(f"not publishable: {exc}"))
            return future
        # PUBACKs are settled on this loop (_collect_acks), so only after this
        # registration: no race between publish() and the acknowledgement.
        self._waiting[info.mid] = future
        if self._collecting is None:
            self._collect_delay = ACK_COLLECT_MIN
            self._collecting = self._loop.call_later(ACK_COLLECT_MIN, self._collect_acks)
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
        sock = client.socket()
        peer = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        self._hop(self._on_connect, bool(reason.is_failure), str(reason), peer)

    def _paho_on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._hop(self._on_unreachable)

    def _paho_on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                            reason: Any, properties: Any) -> None:
        self._hop(self._on_disconnect, str(reason))

    def _paho_on_publish(self, client: paho.Client, userdata: Any, mid: int,
                         reason: Any, properties: Any) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        self._acks.append((mid, failed, str(reason) if failed else ""))  # thread-safe

    # ------------------------------------------------ event loop side

    def _on_connect(self, failed: bool, reason: str, peer: bytes | None = None) -> None:
        target = self.health.target
        if peer:
            server = certificates.from_der(peer, self.id, target)
            if server is not None:
                certificates.warn_if_expiring([server])
                self.health.certificates = [c.view() for c in [*self._certificates, server]]
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
        self._delay, self.health.next_attempt_at = None, None
        if self.health.last_error and not self.health.connected and not self._takeovers.reported:
            self.health.last_error = None  # what kept it away is over
        self.health.connected, self.health.since = True, time.time()
        if self._takeovers.reported and self._loop is not None:
            # A clash stays on the page until a session outlasts it.
            self._loop.call_later(SHORT_SECONDS, self._clash_over, self.health.since)
        log.info("MQTT broker %s reached (uplink %s)", target, self.id)
        if self._client is not None:
            self._client.publish(self._status_topic, self._presence("online"), qos=1, retain=True)

    def _attempt_failed(self) -> None:
        """paho waits its next delay before it tries again: say when that will be."""
        if self._closing:
            return
        self._delay = (self._min_delay if self._delay is None
                       else min(self._delay * 2, self.settings.reconnect_max))
        self.health.next_attempt_at = time.time() + self._delay

    def _on_unreachable(self) -> None:
        self._attempt_failed()
        if self._context is not None:
            if not self._explaining and self._loop is not None:
                self._explaining = True
                self._loop.create_task(self._explain_tls_failure())
            return
        self._report_unreachable(f"MQTT broker {self.health.target} not reachable")

    def _report_unreachable(self, error: str) -> None:
        if self.health.last_error != error:
            log.warning("%s; buffering until it is", error)
        self.health.last_error = error

    async def _explain_tls_failure(self) -> None:
        """paho only says the connection failed; a handshake of our own says why."""
        assert self._context is not None
        assert self.settings.tls is not None
        try:
            error = await asyncio.to_thread(handshake_error, self.settings.host,
                                            self.settings.port, self._context)
        finally:
            self._explaining = False
        if error is None or (isinstance(error, OSError) and not isinstance(
                error, ssl.SSLError | ConnectionResetError)):
            self._report_unreachable(f"MQTT broker {self.health.target} not reachable")
        else:
            self._report_unreachable(f"MQTT broker {self.health.target}: "
                                     f"{explain(error, self.settings.host, self.settings.tls)}")

    def _on_disconnect(self, reason: str) -> None:
        if self._closing:
            return
        self._attempt_failed()
        if self.health.connected:
            now = time.time()
            if self._takeovers.clash(reason, now - (self.health.since or now), now):
                self._report_clash(reason)
            else:
                log.warning("MQTT broker %s lost (%s); buffering", self.health.target, reason)
                self.health.last_error = f"disconnected: {reason}"
            self.health.connected, self.health.since = False, now
            self.health.disconnects += 1
        elif self._refused_logged is None:
            # The connection ended before the broker's CONNACK, and no refusal was
            # reported: under TLS 1.3 a broker that wants a client certificate drops the
            # connection after the handshake, and paho calls no connect callback.
            if self._context is not None:
                if not self._explaining and self._loop is not None:
                    self._explaining = True
                    self._loop.create_task(self._explain_tls_failure())
            else:
                self._report_unreachable(f"MQTT broker {self.health.target} closed the "
                                         f"connection before accepting it ({reason})")

    def _clash_over(self, since: float) -> None:
        if self.health.connected and self.health.since == since and self._takeovers.reported:
            self._takeovers.settled()
            self.health.last_error = None
            log.warning("MQTT uplink %s: its session has held for %g s; the client id clash "
                        "is over", self.id, SHORT_SECONDS)

    def _report_clash(self, reason: str) -> None:
        how = ("handed this uplink's session to another client" if "taken over" in
               reason.lower() else f"dropped this connection {self._takeovers.drops} times "
               "in a minute, each soon after accepting it")
        self.health.last_error = (
            f"MQTT broker {self.health.target} {how}: another client is connected with the "
            f"same client id '{self._client_id}'. Two agents with the same agent.id do this: "
            f"give each agent its own agent.id, or set client_id on uplink '{self.id}'")
        if not self._takeovers.reported:
            log.error("%s", self.health.last_error)
            self._takeovers.reported = True

    def _collect_acks(self) -> None:
        """Settle the PUBACKs paho's thread has gathered. Waking the loop from that thread
        for each burst cost a self-pipe write and read and a fight for the GIL per message
        (a third of the drain's time); a timer collects them instead, every 2 ms while
        they come, backing off to 50 ms while messages wait on a broker that is silent."""
        self._collecting = None
        collected = bool(self._acks)
        while self._acks:
            self._on_ack(*self._acks.popleft())
        if self._waiting and self._loop is not None and not self._loop.is_closed():
            self._collect_delay = (ACK_COLLECT_MIN if collected
                                   else min(self._collect_delay * 2, ACK_COLLECT_MAX))
            self._collecting = self._loop.call_later(self._collect_delay, self._collect_acks)

    def _on_ack(self, mid: int, failed: bool, reason: str) -> None:
        future = self._waiting.pop(mid, None)
        if future is None or future.done():
            return  # presence messages are not tracked
        if failed:
            future.set_exception(UplinkRejected(f"broker refused the message: {reason}",
                                                answer=f"PUBACK reason: {reason}"))
        else:
            future.set_result(None)
