"""The primary host application's STATE, as an Edge Node reads it (Sparkplug 3.0).

A host publishes `spBv1.0/STATE/<host_id>`, retained, at QoS 1: `{"online": true,
"timestamp": <ms>}` when its session begins, and the same with `false` as its will and on
a clean stop. An Edge Node configured with a primary host publishes no birth until the
host is online on the broker it is connected to, and leaves a broker on which the host
goes offline, for the next one. A STATE older than the last one seen on this connection
is a late copy and is ignored, as the specification requires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .topics import state_topic

MAX_STATE_BYTES = 1024  # a STATE is a short JSON object; anything longer is not one


@dataclass(frozen=True, slots=True)
class HostState:
    online: bool
    timestamp: int


def parse_state(payload: bytes) -> HostState:
    """A STATE payload, or ValueError saying what is wrong with it."""
    if len(payload) > MAX_STATE_BYTES:
        raise ValueError(f"{len(payload)} bytes, more than a STATE message holds")
    try:
        body: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc}); Sparkplug 3.0 hosts publish "
                         '{"online": true|false, "timestamp": <ms>}') from exc
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    online, timestamp = body.get("online"), body.get("timestamp")
    if type(online) is not bool:
        raise ValueError("'online' is not true or false")
    if type(timestamp) is not int or timestamp < 0:
        raise ValueError("'timestamp' is not a number of milliseconds")
    return HostState(online, timestamp)


class PrimaryHost:
    """What this connection has heard of the host: None until its first STATE."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self.topic = state_topic(host_id)
        self.state: HostState | None = None

    def forget(self) -> None:
        """A new connection: the host's state on that broker is not known yet."""
        self.state = None

    def hear(self, state: HostState) -> bool:
        """Take `state` unless it is older than the last one; True if it was taken."""
        if self.state is not None and state.timestamp < self.state.timestamp:
            return False
        self.state = state
        return True

    @property
    def online(self) -> bool:
        return self.state is not None and self.state.online
