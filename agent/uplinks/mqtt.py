"""MQTT uplink on paho-mqtt: QoS 1, an event counts as delivered only on its PUBACK.

paho is driven by the event loop (mqtt_link), so its callbacks run there. paho keeps
every unacknowledged QoS 1 message and re-sends it after a reconnect, so a broker
outage needs nothing from us but patience; after an agent restart the buffer's
cursor re-sends whatever was never acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from buffer import StoredEvent

from .. import __version__
from ..errors import UplinkRejected
from ..events import format_time
from ..settings.models import Config, MqttUplink
from . import certificates
from .base import address, broker_health
from .mqtt_link import LoopDrivenClient, new_client
from .takeover import SHORT_SECONDS, TakeoverWatch
from .tls import client_context, explain, handshake_error
from .topics import TopicRenderer

log = logging.getLogger("floorlink.mqtt")

# Closing waits at most this long in all for the offline presence's PUBACK and the
# DISCONNECT to be written (the agent's stop budget counts 2 s per uplink).
CLOSE_WAIT = 2.0
# Failovers kept for the status page, newest last.
RECENT_FAILOVERS = 10


class MqttPublisher:
    def __init__(self, settings: MqttUplink, config: Config) -> None:
        self.id = settings.id
        self.settings = settings
        self._endpoints = settings.endpoints()
        self.health = broker_health(settings.id, "mqtt", self._endpoints)
        self._host, self._port = self._endpoints[0]  # the server of this attempt
        self._accepted_by: str | None = None  # the server of the last accepted session
        self._lost_at: float | None = None  # when that session ended
        # The last retained state per topic, published again on every new session: a
        # cluster node that takes over may not hold it, nor a broker that restarted.
        self._retained: dict[str, str] = {}
        # Submitted while no session is ready, in order; bounded by the forwarder's window.
        self._held: list[tuple[StoredEvent, asyncio.Future[None]]] = []
        self._session = 0  # counts sessions accepted and lost
        self._ready = False  # a session is accepted and paho has re-sent what it held
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
        self._link: LoopDrivenClient | None = None
        self._refused_logged: str | None = None
        self._takeovers = TakeoverWatch()
        self._closing = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        v5 = self.settings.protocol == "5"
        client = new_client(self.settings, self._client_id,
                            paho.MQTTv5 if v5 else paho.MQTTv311, None if v5 else False,
                            self._context)
        if self._context is not None:
            assert self.settings.tls is not None
            if self.settings.tls.insecure:
                log.warning("uplink %s: TLS certificate verification is OFF (tls.insecure); "
                            "anyone able to answer on %s receives the plant's data",
                            self.id, self.health.target)
        certificates.warn_if_expiring(self._certificates)
        self.health.certificates = [c.view() for c in self._certificates]
        client.will_set(self._status_topic, self._presence("offline"), qos=1, retain=True)
        client.on_connect = self._paho_on_connect
        client.on_disconnect = self._paho_on_disconnect
        client.on_publish = self._paho_on_publish
        self._client = client
        self._aim(0)
        self._link = LoopDrivenClient(client, self.settings.reconnect_max,
                                      self._on_unreachable, self._on_waiting,
                                      servers=len(self._endpoints), aim=self._aim)
        self._link.start()

    def _aim(self, index: int) -> None:
        """Point the client at server `index`; the same client id and session settings."""
        assert self._client is not None
        self._host, self._port = self._endpoints[index]
        self.health.target = address(self._host, self._port)
        keepalive = int(self.settings.keepalive)
        if self.settings.protocol == "5":
            # Keep the broker-side session for an hour across our reconnects.
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            self._client.connect_async(self._host, self._port, keepalive=keepalive,
                                       clean_start=False, properties=properties)
        else:
            self._client.connect_async(self._host, self._port, keepalive=keepalive)

    def submit(self, event: StoredEvent) -> asyncio.Future[None]:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if not self._ready:
            # paho re-sends what the last session left unacknowledged only after the next
            # CONNACK; a message published before that would overtake those (measured:
            # an asset's telemetry 153-156 arrived before 145-152 after a failover).
            self._held.append((event, future))
            return future
        self._publish(event, future)
        return future

    def _publish(self, event: StoredEvent, future: asyncio.Future[None]) -> None:
        assert self._client is not None
        properties = None
        if self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("event-id", event.id)]
            properties.ContentType = "application/cloudevents+json"
        try:
            info = self._client.publish(self._topics.render(event), event.body,
                                        qos=self.settings.qos, properties=properties)
            if self._state_topics is not None and event.type.endswith("machine.state_changed"):
                # Retained, so a dashboard that subscribes later sees the state right away.
                state_topic = self._state_topics.render(event)
                self._client.publish(state_topic, event.body, qos=self.settings.qos,
                                     retain=True)
                self._retained[state_topic] = event.body
        except ValueError as exc:  # paho refuses an oversized payload or an invalid topic
            future.set_exception(UplinkRejected(f"not publishable: {exc}"))
            return
        # PUBACKs are read on this loop, so only after this registration: no race
        # between publish() and the acknowledgement.
        self._waiting[info.mid] = future

    def _release_held(self, session: int) -> None:
        """After paho's re-sends on a new session: what was submitted meanwhile, in order."""
        if session != self._session or self._client is None:
            return  # that session is already gone: keep holding for the next
        self._ready = True
        held, self._held = self._held, []
        for event, future in held:
            if not future.done():
                self._publish(event, future)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        assert self._link is not None
        if client.is_connected():
            info = client.publish(self._status_topic, self._presence("offline"), qos=1, retain=True)
            loop = asyncio.get_running_loop()
            confirmed = loop.create_future()
            self._waiting[info.mid] = confirmed
            deadline = loop.time() + CLOSE_WAIT
            try:
                # Most of the budget; the rest is for the DISCONNECT, written next turn.
                await asyncio.wait_for(confirmed, CLOSE_WAIT * 0.75)
            except (TimeoutError, UplinkRejected) as exc:
                log.debug("offline presence not confirmed: %s", exc)
            await self._link.disconnect(deadline - loop.time())
        await self._link.stop()

    def _presence(self, state: str) -> str:
        return json.dumps({"state": state, "agent": self._agent_id, "version": __version__,
                           "time": time.time()})

    # ------------------------------------------------ paho's callbacks, on the loop

    def _paho_on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                         reason: Any, properties: Any) -> None:
        sock = client.socket()
        peer = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        self._on_connect(bool(reason.is_failure), str(reason), peer)

    def _paho_on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                            reason: Any, properties: Any) -> None:
        self._on_disconnect(str(reason))

    def _paho_on_publish(self, client: paho.Client, userdata: Any, mid: int,
                         reason: Any, properties: Any) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        self._on_ack(mid, failed, str(reason) if failed else "")

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
        self.health.next_attempt_at = None
        if self._link is not None:
            self._link.accepted()
        if self.health.last_error and not self.health.connected and not self._takeovers.reported:
            self.health.last_error = None  # what kept it away is over
        self.health.connected, self.health.since = True, time.time()
        if self._takeovers.reported and self._loop is not None:
            # A clash stays on the page until a session outlasts it.
            self._loop.call_later(SHORT_SECONDS, self._clash_over, self.health.since)
        log.info("MQTT broker %s reached (uplink %s)", target, self.id)
        self._note_failover(target)
        self._session += 1
        if self._loop is not None:
            # paho re-sends the last session's unacknowledged messages when this callback
            # returns, in the same read: held submissions go out after them.
            self._loop.call_soon(self._release_held, self._session)
        if self._client is not None:
            self._client.publish(self._status_topic, self._presence("online"), qos=1, retain=True)
            # Before paho sends again what the last session left unacknowledged: where
            # that holds a newer state for a topic, it lands after this and stays.
            for topic, body in self._retained.items():
                self._client.publish(topic, body, qos=self.settings.qos, retain=True)

    def _note_failover(self, server: str) -> None:
        """A session accepted by another server than the last one is a failover."""
        previous, self._accepted_by = self._accepted_by, server
        if previous is None or previous == server:
            return
        now = time.time()
        resumed_after = round(now - self._lost_at, 3) if self._lost_at is not None else None
        self.health.failovers += 1
        self.health.recent_failovers = [
            *self.health.recent_failovers[-(RECENT_FAILOVERS - 1):],
            {"at": format_time(now), "from": previous, "to": server,
             "resumed_after_s": resumed_after}]
        log.warning("MQTT uplink %s moved from %s to %s (%s s without a broker)", self.id,
                    previous, server, resumed_after)

    def _on_waiting(self, delay: float) -> None:
        """The link waits `delay` before it tries again: say when that will be."""
        if not self._closing:
            self.health.next_attempt_at = time.time() + delay

    def _on_unreachable(self, error: BaseException) -> None:
        log.debug("MQTT broker %s: connecting failed: %r", self.health.target, error)
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
            error = await asyncio.to_thread(handshake_error, self._host, self._port,
                                            self._context)
        finally:
            self._explaining = False
        if error is None or (isinstance(error, OSError) and not isinstance(
                error, ssl.SSLError | ConnectionResetError)):
            self._report_unreachable(f"MQTT broker {self.health.target} not reachable")
        else:
            self._report_unreachable(f"MQTT broker {self.health.target}: "
                                     f"{explain(error, self._host, self.settings.tls)}")

    def _on_disconnect(self, reason: str) -> None:
        self._ready = False
        self._session += 1
        if self._closing:
            return
        if self.health.connected:
            now = time.time()
            if self._takeovers.clash(reason, now - (self.health.since or now), now):
                self._report_clash(reason)
            else:
                log.warning("MQTT broker %s lost (%s); buffering", self.health.target, reason)
                self.health.last_error = f"disconnected: {reason}"
            self.health.connected, self.health.since = False, now
            self.health.disconnects += 1
            self._lost_at = now
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
        if "taken over" not in reason.lower():
            # Measured: NATS drops a client that publishes to a topic holding '.' or ' '.
            self.health.last_error += (
                ". Or the broker refuses what this uplink publishes: NATS drops a client "
                "that publishes to a topic holding '.' (use {type_path} instead of {type})")
        if not self._takeovers.reported:
            log.error("%s", self.health.last_error)
            self._takeovers.reported = True

    def _on_ack(self, mid: int, failed: bool, reason: str) -> None:
        future = self._waiting.pop(mid, None)
        if future is None or future.done():
            return  # presence messages are not tracked
        if failed:
            future.set_exception(UplinkRejected(f"broker refused the message: {reason}",
                                                answer=f"PUBACK reason: {reason}"))
        else:
            future.set_result(None)

