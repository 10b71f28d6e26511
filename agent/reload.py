"""What a reloaded configuration changes, and what of it a running agent can apply.

Devices and uplinks restart one by one: a changed poll interval on one PLC does
not interrupt the others, nor the delivery to an ERP. A Sparkplug uplink restarts too
when a device's change changes its metrics (a new session announces them). Everything else (assets,
the buffer, the status endpoint, the site) shapes state that is committed with
every event; it changes only with a restart, which the status page asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .derive import compile_assets, compile_devices
from .settings.models import Config


@dataclass
class ReloadPlan:
    devices_stop: list[str] = field(default_factory=list)
    devices_start: list[str] = field(default_factory=list)  # new, or changed (after a stop)
    uplinks_restart: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)  # what only a restart applies

    @property
    def empty(self) -> bool:
        return not (self.devices_stop or self.devices_start or self.uplinks_restart)

    def describe(self) -> str:
        parts = [f"{label} {', '.join(ids)}" for label, ids in (
            ("stopping devices", [d for d in self.devices_stop if d not in self.devices_start]),
            ("restarting devices", [d for d in self.devices_start if d in self.devices_stop]),
            ("starting devices", [d for d in self.devices_start if d not in self.devices_stop]),
            ("restarting uplinks", self.uplinks_restart)) if ids]
        return "; ".join(parts) or "no device or uplink changed"


def plan(running: Config, loaded: Config) -> tuple[ReloadPlan, Config]:
    """The plan, and the configuration the agent runs once it is carried out."""
    result = ReloadPlan()
    old_devices = {d.id: d for d in running.devices}
    new_devices = {d.id: d for d in loaded.devices}
    shaping_changed = (compile_assets(running) != compile_assets(loaded)
                       or compile_devices(running) != compile_devices(loaded))
    if shaping_changed or old_devices.keys() != new_devices.keys():
        # Derivation is compiled from assets and tags; a new set of them needs a restart.
        result.restart_needed.append("assets and the tags they use")
        devices = running.devices
    else:
        devices = loaded.devices
        for device_id, device in new_devices.items():
            if device != old_devices[device_id]:
                result.devices_stop.append(device_id)
                result.devices_start.append(device_id)
    old_uplinks = {u.id: u for u in running.uplinks}
    new_uplinks = {u.id: u for u in loaded.uplinks}
    if old_uplinks.keys() != new_uplinks.keys():
        # Each uplink owns a cursor in the buffer, made when the buffer opens.
        result.restart_needed.append("the set of uplinks")
        uplinks = running.uplinks
    else:
        uplinks = loaded.uplinks
        result.uplinks_restart = [u for u, s in new_uplinks.items() if s != old_uplinks[u]]
    for section in ("site", "agent", "buffer", "telemetry", "status", "timezone"):
        if getattr(running, section, None) != getattr(loaded, section, None):
            result.restart_needed.append(section)
    applied = running.model_copy(update={"devices": devices, "uplinks": uplinks})
    for uplink_id in _reborn_sparkplug(running, applied):
        if uplink_id not in result.uplinks_restart:
            result.uplinks_restart.append(uplink_id)
    return result, applied


def _reborn_sparkplug(running: Config, applied: Config) -> list[str]:
    """Sparkplug uplinks whose metrics change with the devices applied (a tag's type, a
    new publishing tag): an Edge Node announces new metrics only with a new session's
    births, so the uplink restarts."""
    ids = [u.id for u in applied.uplinks if u.type == "sparkplug"]
    if not ids or running.devices == applied.devices:
        return []
    from .uplinks.sparkplug import catalogue  # protobuf: only where Sparkplug is used

    return ids if catalogue.build(running) != catalogue.build(applied) else []
