"""What the status endpoint shows: the agent's owners update it, the server only reads it."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..events import format_time
from .clock import ClockStatus

if TYPE_CHECKING:
    from buffer import BufferStats
    from drivers.runner import DeviceHealth

    from ..derive import AssetState
    from ..uplinks.base import UplinkHealth


@dataclass
class StatusBoard:
    """What the agent exposes; its owners update it, the server only reads it."""

    site: str
    agent: str
    started_at: float = field(default_factory=time.time)
    alive: bool = False
    devices: list[DeviceHealth] = field(default_factory=list)
    uplinks: list[UplinkHealth] = field(default_factory=list)
    buffer: BufferStats | None = None
    buffer_error: str | None = None
    assets: dict[str, AssetState] = field(default_factory=dict)
    events_by_type: dict[str, int] = field(default_factory=dict)
    commits: int = 0  # transactions the writer has committed to the buffer
    config_path: str | None = None
    config_loaded_at: float | None = None
    config_error: str | None = None  # the last reload's refusal; the old config runs on
    restart_needed: list[str] = field(default_factory=list)  # changes a reload cannot apply
    buffer_open: bool = False
    uplinks_started: bool = False
    clock: ClockStatus | None = None
    # Certificates that are not an uplink's (OPC UA client certificates), as view dicts.
    other_certificates: list[dict[str, object]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return (self.config_loaded_at is not None and self.buffer_open and self.uplinks_started
                and self.alive)

    def readiness(self) -> dict[str, bool]:
        return {"config_loaded": self.config_loaded_at is not None,
                "buffer_open": self.buffer_open, "uplinks_started": self.uplinks_started,
                "running": self.alive}

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        buffer = dataclasses.asdict(self.buffer) if self.buffer else None
        if buffer is not None:
            buffer["backlog"] = {
                uplink: {_LANE_LABELS[lane]: count for lane, count in lanes.items()}
                for uplink, lanes in buffer["backlog"].items()}
            for alarm in buffer["alarms"]:
                alarm["raised_at"] = format_time(alarm["raised_at"])
        return {
            "agent": {"site": self.site, "id": self.agent, "version": __version__,
                      "started_at": format_time(self.started_at),
                      "uptime_s": round(now - self.started_at, 1), "healthy": self.alive,
                      "ready": self.ready, "readiness": self.readiness(),
                      "config": self.config_path,
                      "config_loaded_at": format_time(self.config_loaded_at)
                      if self.config_loaded_at else None,
                      "config_error": self.config_error,
                      "restart_needed": self.restart_needed},
            "clock": self._clock_view(),
            "devices": [_device_view(d, now) for d in self.devices],
            "uplinks": [self._uplink_view(u, now) for u in self.uplinks],
            "buffer": buffer,
            "buffer_error": self.buffer_error,
            "alarms": self.alarms(buffer["alarms"] if buffer else []),
            "certificates_expiring": [
                c for c in [*self.other_certificates,
                            *(c for u in self.uplinks for c in u.certificates)]
                if c.get("expiring")],
            "events_by_type": dict(self.events_by_type),
            "assets": {asset: _asset_view(st) for asset, st in self.assets.items()},
        }

    def _clock_view(self) -> dict[str, Any]:
        view: dict[str, Any] = (self.clock.view() if self.clock
                                else {"synchronized": None, "source": "not checked yet"})
        view["opcua_servers"] = {
            d.device: d.details.get("server_clock_offset_s") for d in self.devices
            if d.protocol == "opcua"}
        return view

    def _uplink_view(self, health: UplinkHealth, now: float) -> dict[str, Any]:
        view = _times_as_text(dataclasses.asdict(health))
        stats = self.buffer
        if stats is not None:
            lanes = stats.backlog.get(health.uplink, {})
            view["backlog"] = sum(lanes.values())
            oldest = stats.oldest_pending_at.get(health.uplink)
            view["oldest_pending_age_s"] = round(now - oldest, 1) if oldest else None
            view["dead_letters_stored"] = stats.dead_letters.get(health.uplink, 0)
        return view

    def alarms(self, buffer_alarms: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every alarm raised now; the buffer's as given (the snapshot formats their times),
        or as they stand."""
        if buffer_alarms is None:
            buffer_alarms = ([dataclasses.asdict(a) for a in self.buffer.alarms]
                             if self.buffer else [])
        alarms: list[dict[str, Any]] = []
        if self.buffer_error:
            alarms.append({"key": "buffer.write", "severity": "critical",
                           "message": self.buffer_error, "raised_at": None})
        if self.config_error:
            alarms.append({"key": "config.reload", "severity": "warning",
                           "message": self.config_error, "raised_at": None})
        alarms += [{"key": f"uplink.{u.uplink}.paused", "severity": "critical",
                    "message": u.alarm, "raised_at": None} for u in self.uplinks if u.alarm]
        for d in self.devices:
            if d.state == "up" and d.tag_errors:
                listed = "; ".join(f"{tag}: {why}" for tag, why in sorted(d.tag_errors.items())[:5])
                more = len(d.tag_errors) - 5
                alarms.append({
                    "key": f"device.{d.device}.degraded", "severity": "warning",
                    "message": f"device {d.device} is connected but {len(d.tag_errors)} tag(s) "
                               f"answer with an error: {listed}" + (f"; and {more} more"
                                                                    if more > 0 else "")
                               + ". Check each tag's address and type against the PLC",
                    "raised_at": None})
        if self.clock is not None and self.clock.synchronized is False:
            alarms.append({"key": "clock.unsynchronized", "severity": "warning",
                           "message": "the system clock is not synchronised: event times "
                                      "may be off; check NTP (timedatectl status)",
                           "raised_at": None})
        return alarms + buffer_alarms


def _device_view(health: DeviceHealth, now: float) -> dict[str, Any]:
    view = _times_as_text(dataclasses.asdict(health))
    if health.state == "up" and health.tag_errors:
        view["state"] = "degraded"  # connected, but not every tag answers
    view["last_sample_age_s"] = (round(now - health.last_sample_at, 1)
                                 if health.last_sample_at else None)
    return view


def _times_as_text(view: dict[str, Any]) -> dict[str, Any]:
    """Epoch seconds become RFC 3339 for the technician reading the page."""
    for key, value in view.items():
        if (key == "since" or key.endswith("_at")) and isinstance(value, float):
            view[key] = format_time(value)
    return view


_LANE_LABELS = {0: "hold", 1: "business", 2: "telemetry"}


def _asset_view(state: AssetState) -> dict[str, Any]:
    return {
        "state": state.machine_state,
        "state_code": state.state_code,
        "since": format_time(state.state_since) if state.state_since else None,
        "work_order": state.work_order,
        "open_downtime": dataclasses.asdict(state.downtime) if state.downtime else None,
        "open_hold": dataclasses.asdict(state.hold) if state.hold else None,
        "unconfirmed": dict(state.pending),
    }
