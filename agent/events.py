"""The event contract: CloudEvents 1.0 envelopes, type names, lanes.

The JSON Schemas under docs/schemas/ and docs/events.md describe the same
contract for integrators; tests validate every emitted event against them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import uuid6

CONTRACT_VERSION = "v1"


class Lane(IntEnum):
    """Delivery lanes, drained in this order of priority."""

    HOLD = 0
    BUSINESS = 1
    TELEMETRY = 2

    @property
    def label(self) -> str:
        return LANE_LABELS[self]


LANE_LABELS = {lane: lane.name.lower() for lane in Lane}  # read for every event: no enum walk

EVENT_LANES: dict[str, Lane] = {
    "machine.state_changed": Lane.BUSINESS,
    "downtime.started": Lane.BUSINESS,
    "downtime.ended": Lane.BUSINESS,
    "downtime.micro_stop": Lane.BUSINESS,
    "downtime.classified": Lane.BUSINESS,
    "production.confirmed": Lane.BUSINESS,
    "quality.hold_raised": Lane.HOLD,
    "quality.hold_released": Lane.HOLD,
    "maintenance.requested": Lane.BUSINESS,
    "counters.snapshot": Lane.BUSINESS,
    "shift.completed": Lane.BUSINESS,
    "telemetry": Lane.TELEMETRY,
}


def full_type(short: str) -> str:
    return f"floorlink.{short}.{CONTRACT_VERSION}"


def short_type(full: str) -> str:
    return full.removeprefix("floorlink.").removesuffix(f".{CONTRACT_VERSION}")


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so ids sort roughly in creation order."""
    return str(uuid6.uuid7())


@functools.lru_cache(maxsize=4096)  # the samples of one poll share their time
def format_time(epoch_seconds: float) -> str:
    """RFC 3339 UTC with milliseconds, the form CloudEvents and most consumers expect."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# One encoder for every body: json.dumps with options builds a new one per call. NaN and
# Infinity are not JSON: refused here (ValueError), never written. Derivation publishes a
# non-finite PLC value as null with quality bad; tests/test_contract.py holds any encoder
# to this (orjson and msgspec would write null silently).
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


@dataclass(frozen=True)
class Event:
    id: str
    type: str  # short name, e.g. "downtime.started"
    source: str
    subject: str
    time: float  # epoch seconds, UTC
    lane: Lane
    sequence: int
    epoch: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_cloudevent(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": full_type(self.type),
            "time": format_time(self.time),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "lane": self.lane.label,
            "sequence": self.sequence,
            "epoch": self.epoch,
            "data": self.data,
        }

    def to_json(self) -> str:
        return _ENCODE(self.to_cloudevent())


def source_uri(site: str, agent: str, origin: str) -> str:
    return f"floorlink://{site}/{agent}/{origin}"
