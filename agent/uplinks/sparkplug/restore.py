"""The Edge Node's current values, from the derivation states committed in the buffer.

A birth carries every metric's current value. The pipeline commits its state in the same
transaction as the events it derived (derive/state.py), so a state is exactly what its
events said, up to the last of them: a tag's last published value and quality, an
asset's state, work order, totals, open downtime and hold, a device's being offline.
Read with the position of that last event (buffer/snapshot.py), they let a birth say
what is current even after a restart or a long outage, while the events the uplink has
not sent yet follow as history.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ...derive.state import DEVICE_KEY, AssetState, DeviceState, TelemetryMemory
from .catalogue import Catalogue
from .metrics import QUALITIES, Update
from .payload import Quality

log = logging.getLogger("floorlink.sparkplug")


@dataclass
class Restored:
    updates: list[Update] = field(default_factory=list)
    offline: set[str] = field(default_factory=set)  # devices whose last status was offline


def from_states(states: dict[str, str], catalogue: Catalogue, now_ms: int) -> Restored:
    """What the states say of the catalogue's metrics; a state that cannot be read is
    skipped with a warning (its metrics are born null, as with no value yet)."""
    result = Restored()
    refs = catalogue.by_ref()
    memories: dict[str, TelemetryMemory] = {}
    for key, text in states.items():
        try:
            if key.startswith(DEVICE_KEY):
                device = DeviceState.from_json(text)
                memories.update(device.telemetry)
                if device.offline_since is not None:
                    result.offline.add(key.removeprefix(DEVICE_KEY))
            else:
                asset = AssetState.from_json(text)
                memories.update(asset.telemetry)
                result.updates += [u for u in _asset_updates(key, asset, now_ms)
                                   if u.ref in refs]  # an asset the config no longer has
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("Sparkplug: the committed state of %s could not be read (%s); its "
                        "metrics are born without a value", key, exc)
    for ref, memory in memories.items():
        if memory.published and ref in refs:
            at_ms = round(memory.published_at * 1000) if memory.published_at else now_ms
            result.updates.append(Update(ref, memory.published_value, at_ms,
                                         QUALITIES.get(memory.published_quality, Quality.BAD)))
    return result


def _asset_updates(asset: str, state: AssetState, now_ms: int) -> list[Update]:
    """The asset's metrics, each timed by when it became so where the state says."""

    def on(name: str, value: str | int | bool | None, since: float | None = None) -> Update:
        return Update(f"{asset}/{name}", value, round(since * 1000) if since else now_ms)

    updates = []
    if state.machine_state is not None:
        updates += [on("State", state.machine_state, state.state_since),
                    on("State Code", state.state_code, state.state_since)]
    if state.work_order is not None:
        updates.append(on("Work Order", state.work_order))
    if state.totals_work_order is not None:
        updates += [on("Good Total", state.totals["good"]),
                    on("Scrap Total", state.totals["scrap"])]
    downtime, hold = state.downtime, state.hold
    updates.append(on("Downtime/Open", downtime is not None))
    if downtime is not None:
        updates.append(on("Downtime/Reason", downtime.reason, downtime.started_at))
    updates.append(on("Hold/Open", hold is not None))
    if hold is not None:
        updates += [on("Hold/Reason", hold.reason, hold.raised_at),
                    on("Lot", hold.lot, hold.raised_at)]
    return updates
