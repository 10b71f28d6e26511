"""The uplink protocol and what the status page shows of an uplink."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from buffer import StoredEvent


@dataclass
class UplinkHealth:
    uplink: str
    type: str
    target: str
    connected: bool = False
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    delivered: int = 0
    dead_lettered: int = 0
    last_delivered_at: float | None = None
    disconnects: int = 0  # times a working connection was lost
    skipped: int = 0  # events this uplink's `events` filter left out
    certificates: list[dict[str, object]] = field(default_factory=list)
    alarm: str | None = None  # set while the uplink cannot work until someone acts
    credentials_accepted_at: float | None = None  # the upstream last took our key or login
    next_attempt_at: float | None = None  # while disconnected: when the next try is due
    details: dict[str, object] = field(default_factory=dict)
    # A broker cluster (MQTT `servers`): every node, and each move from one to another.
    servers: list[str] = field(default_factory=list)
    failovers: int = 0
    recent_failovers: list[dict[str, object]] = field(default_factory=list)  # newest last


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def broker_health(uplink_id: str, kind: str, endpoints: list[tuple[str, int]]) -> UplinkHealth:
    """The health of an uplink on MQTT brokers: the first one its target, every node listed
    when there are several (a cluster)."""
    health = UplinkHealth(uplink_id, kind, address(*endpoints[0]))
    if len(endpoints) > 1:
        health.servers = [address(*endpoint) for endpoint in endpoints]
    return health


class Uplink(Protocol):
    id: str
    health: UplinkHealth

    async def start(self) -> None:
        """Begin connecting; return at once. Connection state shows in `health`."""

    def submit(self, event: StoredEvent) -> asyncio.Future[None]:
        """Put `event` on its way, in call order. The future completes when the peer
        acknowledged it, or fails with UplinkRejected (permanent) or UplinkUnavailable."""
        ...

    async def close(self) -> None:
        """Stop cleanly; unacknowledged events stay in the buffer for next time."""
