"""What the status endpoint shows: the agent's owners update it, the server only reads it."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..build import this_build
from ..events import format_time
from .clock import ClockStatus
from .impact import missing, refused

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
    # asset -> the device its state tag is read from: an asset's state is only as fresh
    # as that device's data.
    asset_state_devices: dict[str, str] = field(default_factory=dict)
    # asset -> {"current": shift view, "previous": shift view} (agent/shift/view.py)
    shifts: dict[str, Any] = field(default_factory=dict)
    # Until when the line page refuses PIN logins after many wrong ones (epoch seconds).
    line_locked_until: float = 0.0

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
            "agent": {"site": self.site, "id": self.agent, "version": this_build().version,
                      "package": this_build().package, "commit": this_build().commit,
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
            "certificates_expiring": self._expiring_certificates(),
            "events_by_type": dict(self.events_by_type),
            "assets": {asset: self._asset_view(asset, st) for asset, st in self.assets.items()},
            "shifts": self.shifts,
        }

    def _asset_view(self, asset: str, state: AssetState) -> dict[str, Any]:
        view = _asset_view(state)
        since = self._no_data_since(asset)
        view["no_data_since"] = format_time(since) if since is not None else None
        return view

    def _no_data_since(self, asset: str) -> float | None:
        """When the asset's state stopped being known, or None while its device delivers.
        A state left over from before is not the machine's state now."""
        state = self.assets.get(asset)
        if state is not None and state.no_data_since is not None:
            return state.no_data_since  # derivation knows: silent device, or a Bad value
        device_id = self.asset_state_devices.get(asset)
        health = next((d for d in self.devices if d.device == device_id), None)
        if health is None:
            return None
        if health.state != "up":
            return health.last_sample_at or health.since
        if health.last_sample_at is None:
            return health.since
        return None

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
            impact = stats.impact.get(health.uplink)
            view["missing"] = missing(impact, health.type, health.target, now)
            view["refused"] = refused(impact, health.type, health.target)
        return view

    def alarms(self, buffer_alarms: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every alarm raised now, each with what to do: the one list of what is wrong. The
        buffer's as given (the snapshot formats their times), or as they stand: those
        include `buffer.fill`, raised by retention as the buffer nears its hard limit."""
        if buffer_alarms is None:
            buffer_alarms = ([dataclasses.asdict(a) for a in self.buffer.alarms]
                             if self.buffer else [])
        now = time.time()
        alarms: list[dict[str, Any]] = []
        if self.buffer_error:
            alarms.append(_alarm("buffer.write", "critical", self.buffer_error))
        if self.config_error:
            alarms.append(_alarm("config.reload", "warning", self.config_error))
        for d in self.devices:
            alarms.extend(device_alarms(d, now))
        for u in self.uplinks:
            alarms.extend(self._uplink_alarms(u))
        if self.clock is not None and self.clock.synchronized is False:
            alarms.append(_alarm("clock.unsynchronized", "warning",
                                 "the system clock is not synchronised: event times may be "
                                 "off; check NTP (timedatectl status)"))
        if self.line_locked_until > now:
            alarms.append(_alarm(
                "line.pins_locked", "warning",
                "the line page refuses PIN logins until "
                f"{time.strftime('%H:%M', time.localtime(self.line_locked_until))}: many "
                "wrong PINs came in a few minutes. Someone may be guessing PINs on the plant "
                "network: the agent's log names the addresses"))
        for cert in self._expiring_certificates():
            alarms.append(_alarm(
                f"certificate.{cert.get('uplink')}.{cert.get('which')}.expiring", "warning",
                f"certificate {cert.get('subject')} ({cert.get('uplink')}, {cert.get('which')}) "
                f"expires {cert.get('not_after')}, in {cert.get('days_left')} days: renew it "
                "and reload"))
        return alarms + buffer_alarms

    def _uplink_alarms(self, u: UplinkHealth) -> list[dict[str, Any]]:
        alarms = []
        backlog = sum(self.buffer.backlog.get(u.uplink, {}).values()) if self.buffer else 0
        impact = self.buffer.impact.get(u.uplink) if self.buffer else None
        if u.alarm:  # the uplink cannot work until someone acts (a refused ERP login)
            alarms.append(_alarm(f"uplink.{u.uplink}.paused", "critical", u.alarm))
        elif not u.connected:
            why = f": {u.last_error}" if u.last_error else ""
            short = missing(impact, u.type, u.target)
            alarms.append(_alarm(
                f"uplink.{u.uplink}.disconnected", "warning",
                f"uplink {u.uplink} cannot reach {u.target} since {format_time(u.since)}{why}. "
                + (f"{short}. " if short else "")
                + f"{backlog} event(s) wait in the buffer and go out when it is back; "
                "nothing is lost"))
        stored = self.buffer.dead_letters.get(u.uplink, 0) if self.buffer else 0
        if stored:
            said = refused(impact, u.type, u.target)
            alarms.append(_alarm(
                f"uplink.{u.uplink}.dead_letters", "warning",
                (f"{said}. " if said else f"{stored} event(s) refused by {u.target}. ")
                + "They wait as dead letters: `floorlink buffer dead-letters` shows them; fix "
                "the cause, then `floorlink buffer replay`"))
        return alarms

    def _expiring_certificates(self) -> list[dict[str, object]]:
        return [c for c in [*self.other_certificates,
                            *(c for u in self.uplinks for c in u.certificates)]
                if c.get("expiring")]


CONNECTING_GRACE = 15.0  # seconds a device may take to answer at start before it is an alarm


def _alarm(key: str, severity: str, message: str) -> dict[str, Any]:
    return {"key": key, "severity": severity, "message": message, "raised_at": None}


def device_alarms(d: DeviceHealth, now: float) -> list[dict[str, Any]]:
    """A device down (or never reached), or connected with tags that answer with errors."""
    if d.state == "down" or (d.state == "connecting" and now - d.since > CONNECTING_GRACE):
        why = f": {d.last_error}" if d.last_error else ""
        since = format_time(d.last_sample_at or d.since)
        return [_alarm(f"device.{d.device}.down", "critical",
                       f"device {d.device} is not answering (no data since {since}){why}. "
                       "Check that it is powered and reachable; `floorlink probe` reads it "
                       "once")]
    if d.state == "up" and d.tag_errors:
        listed = "; ".join(f"{tag}: {why}" for tag, why in sorted(d.tag_errors.items())[:5])
        more = len(d.tag_errors) - 5
        return [_alarm(
            f"device.{d.device}.degraded", "warning",
            f"device {d.device} is connected but {len(d.tag_errors)} tag(s) answer with an "
            f"error: {listed}" + (f"; and {more} more" if more > 0 else "")
            + ". Check each tag's address and type against the PLC")]
    return []


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
