"""The Sparkplug B uplink: the agent as an Edge Node (Sparkplug 3.0), on paho.

Delivery is the specification's, not floorlink's (DESIGN.md, invariant 9): births and
data go at QoS 0, so an event counts as sent once paho has written it to the socket. What
floorlink adds stays within that: an event taken from the buffer while no session is
born waits (the forwarder's window bounds how many; the rest wait in the buffer) and goes
out after the births; an event written to a connection that then drops is given back to
the forwarder, which offers it again.

Sessions: a clean MQTT session (the specification requires it) whose will is the NDEATH
carrying the session's bdSeq, kept across restarts (bdseq.py). On CONNACK: subscribe to
this node's NCMD and, with a primary host configured, to its STATE; once the host is
online (or at once, without one), NBIRTH (seq 0) and a DBIRTH per device not offline.
The births carry the current values committed in the buffer (restore.py), read with the
position of the last event committed with them: the events up to that position follow
flagged historical, the later ones live. `device.status` events become DDEATH and
DBIRTH. NCMD `Node Control/Rebirth` publishes the births again: it is the one command
floorlink accepts; it never writes to a PLC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import paho.mqtt.client as paho

from buffer import Outbox, StoredEvent
from buffer.snapshot import committed

from ...errors import BufferError, UplinkRejected, UplinkUnavailable
from ...settings.models import Config
from ...settings.sparkplug import SparkplugUplink
from ..base import address, broker_health
from ..mqtt_link import LoopDrivenClient, new_client
from ..tls import client_context
from . import catalogue
from .bdseq import BdSeqStore
from .host import PrimaryHost, parse_state
from .payload import decode
from .session import EdgeNode, Message
from .speaker import NodeSpeaker
from .topics import node_topic

log = logging.getLogger("floorlink.sparkplug")

CLOSE_WAIT = 2.0  # the NDEATH and the DISCONNECT, within the agent's stop budget


def _now_ms() -> int:
    return int(time.time() * 1000)


class SparkplugNode:
    def __init__(self, settings: SparkplugUplink, config: Config, outbox: Outbox) -> None:
        self.id = settings.id
        self.settings = settings
        self._outbox = outbox
        self._endpoints = settings.endpoints()
        self.health = broker_health(settings.id, "sparkplug", self._endpoints)
        self.group = settings.group_id
        self.node_id = settings.edge_node_id or config.agent.id
        self._bd_seqs = BdSeqStore(outbox.path.with_name(
            f"{outbox.path.name}.sparkplug-{settings.id}.bdseq"))
        self.edge = EdgeNode(self.group, self.node_id, catalogue.build(config),
                             bd_seq=self._bd_seqs.next())
        self._host = (PrimaryHost(settings.primary_host_id)
                      if settings.primary_host_id is not None else None)
        self.speaker = NodeSpeaker(self.edge, settings.id)
        self._client_id = settings.client_id or f"floorlink-{config.agent.id}-sparkplug"
        self._context = client_context(settings.tls) if settings.tls else None
        self._born = False
        self._accepted = False  # the current connection had its CONNACK
        self._connection = 0  # counts connections: a birth read for an old one is dropped
        self._birthing: asyncio.Task[None] | None = None
        # Events at or below this buffer position are in what the last births carried.
        self._historical_until = 0
        self._leaving: str | None = None  # why this node is leaving the broker, if it is
        self._held: list[tuple[StoredEvent, asyncio.Future[None]]] = []
        self._waiting: dict[int, asyncio.Future[None]] = {}  # last mid of an event -> it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._link: LoopDrivenClient | None = None
        self._closing = False
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
            self._held.append((event, future))  # sent after the births
        else:
            self._send(event, future)
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
            await self._link.disconnect(CLOSE_WAIT)
        await self._link.stop()
        if self._birthing is not None:
            self._birthing.cancel()
        self._fail_waiting("the uplink stopped")

    # ------------------------------------------------------------ sessions

    def _aim(self, index: int) -> None:
        """Point the client at server `index`, with this session's NDEATH as its will."""
        assert self._client is not None
        host, port = self._endpoints[index]
        self.health.target = address(host, port)
        self._bd_seqs.save(self.edge.bd_seq)  # on disk before the CONNECT carries it
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
        self._accepted = True
        self._connection += 1
        self._leaving = None
        self.health.connected, self.health.since = True, time.time()
        self.health.last_error = self.health.next_attempt_at = None
        log.info("Sparkplug broker %s reached (uplink %s, bdSeq %d)", self.health.target,
                 self.id, self.edge.bd_seq)
        self._client.subscribe(node_topic(self.group, "NCMD", self.node_id), qos=1)
        if self._host is None:
            self._begin_births()
            return
        self._host.forget()
        self._client.subscribe(self._host.topic, qos=1)
        self._wait_for_host()
        self._show()

    def _wait_for_host(self) -> None:
        assert self._host is not None
        self.health.last_error = (f"waiting for the primary host {self._host.host_id} to be "
                                  f"online on {self.health.target}")

    def _begin_births(self) -> None:
        if self._birthing is None and not self._born:
            assert self._loop is not None
            self._birthing = self._loop.create_task(self._birth(self._connection),
                                                    name=f"sparkplug-births-{self.id}")

    async def _birth(self, connection: int) -> None:
        """Births with the current values committed in the buffer, then what was held."""
        try:
            snapshot = await committed(self._outbox)
        except BufferError as exc:
            # The births carry the values this uplink has sent; the held events follow.
            log.warning("Sparkplug uplink %s: the buffer could not be read for the births "
                        "(%s); they carry the values sent so far", self.id, exc)
            snapshot = None
        finally:
            self._birthing = None
        if (connection != self._connection or not self._accepted or self._born
                or self._leaving is not None or self._client is None):
            return  # that connection is gone (or going); the next one reads again
        now = _now_ms()
        if snapshot is not None:
            self.speaker.restore(snapshot.states, now)
            self._historical_until = max(self._historical_until, snapshot.position)
        self._born = True
        if self._link is not None:
            self._link.accepted()  # only a born session ends the round of servers
        self.health.last_error = None
        self._publish(self._births(now))
        held, self._held = self._held, []
        for event, future in held:
            if not future.done():
                self._send(event, future)

    def _births(self, now: int) -> list[Message]:
        messages = self.speaker.birth(now)
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
            why = self._leaving or f"disconnected: {reason}"
            log.warning("Sparkplug broker %s: %s; holding values", self.health.target, why)
            self.health.disconnects += 1
            self.health.connected, self.health.since = False, time.time()
            self.health.last_error = why
        self._show()

    # ------------------------------------------------------------ the primary host

    def _on_host_state(self, payload: bytes) -> None:
        assert self._host is not None
        try:
            state = parse_state(payload)
        except ValueError as exc:
            log.warning("Sparkplug uplink %s: a STATE of host %s ignored: %s", self.id,
                        self._host.host_id, exc)
            return
        if not self._host.hear(state):
            return  # older than the last one: a late copy
        if state.online:
            log.info("Sparkplug uplink %s: primary host %s online on %s", self.id,
                     self._host.host_id, self.health.target)
            self._begin_births()
        elif self._client is not None and self._leaving is None:
            if self._born or len(self._endpoints) > 1:
                self._leave(f"primary host {self._host.host_id} went offline on this broker"
                            + ("; trying the next server" if len(self._endpoints) > 1 else ""))
            else:
                self._wait_for_host()  # the one broker: hear the host come back at once
        self._show()

    def _leave(self, why: str) -> None:
        """End this session as the specification asks: the NDEATH, then DISCONNECT. The
        link then tries the next server (a whole round with no birth waits, as a round
        with no connection does); with one server, the same one, where the node waits
        unborn for the host's return and then publishes births the host has not seen."""
        assert self._client is not None
        if self._born:  # a session never born there has no birth to end
            death = self.edge.death(_now_ms())
            self._client.publish(death.topic, death.payload, qos=0)
        self._leaving, self._born = why, False
        self._client.disconnect()  # a clean DISCONNECT: the broker drops the will

    def _fail_waiting(self, why: str) -> None:
        """QoS 0 messages paho had not written when the connection went are dropped by
        paho: their events go back to the forwarder, which offers them again."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(UplinkUnavailable(why))

    # ------------------------------------------------------------ events to messages

    def _send(self, event: StoredEvent, future: asyncio.Future[None]) -> None:
        births = self.speaker.births
        try:
            messages = self.speaker.messages(event, event.position <= self._historical_until,
                                             _now_ms())
        except (ValueError, KeyError, TypeError) as exc:
            future.set_exception(UplinkRejected(f"not a Sparkplug metric: {exc}"))
            return
        if self.speaker.births != births:
            self._show()  # a value of a new type brought births
        if not messages:
            future.set_result(None)  # nothing in it for Sparkplug
            return
        mid = self._publish(messages)
        if mid is None:
            future.set_exception(UplinkUnavailable("not connected"))
        else:
            self._waiting[mid] = future

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
        if self._host is not None and message.topic == self._host.topic:
            self._on_host_state(bytes(message.payload))
        else:
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
                               "births": self.speaker.births,
                               "rebirths": self.speaker.rebirths,
                               "offline_devices": sorted(self.speaker.offline)}
        if self._host is not None:
            self.health.details["primary_host"] = self._host.host_id
            self.health.details["primary_host_online"] = self._host.online

