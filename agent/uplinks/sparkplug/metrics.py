"""What a committed floorlink event says about the Edge Node's metrics.

Telemetry sets a device's tag metric; an asset's business events set its metrics on the
node (catalogue.ASSET_METRICS). Other events (shift figures, maintenance requests, ...)
have no metric: they stay on the CloudEvents uplinks, where invariant 2 holds for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .payload import MetricValue, Quality

# floorlink's sample qualities as Sparkplug's Quality property. "uncertain" has no
# Sparkplug equivalent; STALE ("not known to be current") is the nearest.
QUALITIES: dict[str, Quality] = {"good": Quality.GOOD, "uncertain": Quality.STALE,
                                 "bad": Quality.BAD}


@dataclass(frozen=True, slots=True)
class Update:
    """A metric's new value: `ref` is a tag ("<device>.<tag>") or a node metric's name."""

    ref: str
    value: MetricValue
    at_ms: int
    quality: Quality = Quality.GOOD


def updates(short_type: str, subject: str, time_ms: int, data: dict[str, Any]) -> list[Update]:
    """The metric updates one committed event carries, in the event's order."""
    if short_type == "telemetry":
        return [_telemetry(data, time_ms)]
    if short_type == "telemetry.batch":
        # The values of one scan mostly share their time: each text is parsed once.
        times: dict[str | None, int] = {}
        updates = []
        for value in data["values"]:
            text = value.get("at")
            at_ms = times.get(text)
            if at_ms is None:
                at_ms = times[text] = event_time_ms(text, time_ms)
            updates.append(_telemetry(value, at_ms))
        return updates
    asset = subject

    def on(name: str, value: MetricValue) -> Update:
        return Update(f"{asset}/{name}", value, time_ms)

    work_order = [on("Work Order", data["work_order"])] if "work_order" in data else []
    if short_type == "machine.state_changed":
        return [on("State", data.get("state")), on("State Code", data.get("code"))]
    if short_type == "downtime.started":
        return [on("Downtime/Open", True), on("Downtime/Reason", data.get("reason")),
                *work_order]
    if short_type == "downtime.ended":
        return [on("Downtime/Open", False), *work_order]
    if short_type == "production.confirmed":
        return [*work_order, on("Good Total", data.get("good_total")),
                on("Scrap Total", data.get("scrap_total"))]
    if short_type == "quality.hold_raised":
        return [on("Hold/Open", True), on("Hold/Reason", data.get("reason")),
                on("Lot", data.get("lot")), *work_order]
    if short_type == "quality.hold_released":
        return [on("Hold/Open", False), *work_order]
    return []


def _telemetry(value: dict[str, Any], at_ms: int) -> Update:
    return Update(value["tag"], value.get("value"), at_ms,
                  QUALITIES.get(value.get("quality", "good"), Quality.BAD))


def event_time_ms(text: str | None, default: int) -> int:
    """An event's RFC 3339 time (`...Z`, milliseconds) as epoch milliseconds."""
    if not text:
        return default
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
