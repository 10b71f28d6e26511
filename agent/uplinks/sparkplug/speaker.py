"""What the Edge Node says for each committed event, and which devices it holds dead.

The uplink (uplink.py) keeps the MQTT session; this turns events into Sparkplug
messages: metric updates become NDATA and DDATA (historical or live), `device.status`
events DDEATH and DBIRTH, a value of a new type a rebirth. Births list the devices not
known to be offline; after a new session they start from what the buffer's committed
states say (restore.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from buffer import StoredEvent

from ...events import short_type
from . import metrics
from .restore import from_states
from .session import EdgeNode, Message, RebirthNeeded

log = logging.getLogger("floorlink.sparkplug")


class NodeSpeaker:
    def __init__(self, edge: EdgeNode, uplink_id: str) -> None:
        self.edge = edge
        self.uplink_id = uplink_id
        self.offline: set[str] = set()  # devices whose last status was offline
        self.births = self.rebirths = 0

    def restore(self, states: dict[str, str], now_ms: int) -> None:
        """Take the current values and offline devices from committed states."""
        restored = from_states(states, self.edge.catalogue, now_ms)
        self.edge.remember(restored.updates)
        self.offline = {d for d in restored.offline if d in self.edge.catalogue.devices}

    def birth(self, now_ms: int) -> list[Message]:
        """NBIRTH and the DBIRTHs of the devices not known to be offline."""
        self.births += 1
        online = [d for d in self.edge.catalogue.devices if d not in self.offline]
        return self.edge.births(now_ms, online)

    def messages(self, event: StoredEvent, historical: bool, now_ms: int) -> list[Message]:
        """What `event` makes the node publish; ValueError, KeyError or TypeError if it is
        not what its type says."""
        body = json.loads(event.body)
        kind, data = short_type(event.type), body.get("data") or {}
        at = metrics.event_time_ms(body.get("time"), now_ms)
        if kind == "device.status":
            # A historical status is already in what the births said of the device.
            return [] if historical else self._device_status(data, now_ms)
        live: list[metrics.Update] = []
        for update in metrics.updates(kind, event.subject, at, data):
            if self.edge.device_of(update.ref) not in self.offline:
                live.append(update)
            elif not historical:
                self.edge.remember([update])  # it waits for the device's next birth
            # A device that is dead to the host takes no data, history included.
        try:
            return self.edge.data(live, now_ms, historical=historical)
        except RebirthNeeded as exc:
            log.info("Sparkplug uplink %s: born again (%s)", self.uplink_id, exc)
            self.rebirths += 1
            return self.birth(now_ms)

    def _device_status(self, data: dict[str, Any], now_ms: int) -> list[Message]:
        device = data["device"]
        if device not in self.edge.catalogue.devices:
            return []
        if data["status"] == "offline":
            if device in self.offline:
                return []
            self.offline.add(device)
            return [self.edge.device_death(device, now_ms)]
        if device not in self.offline:
            return []
        self.offline.discard(device)
        return [self.edge.device_birth(device, now_ms)]
