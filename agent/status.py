"""The local status endpoint: reads snapshots, never writes anything.

GET /status   JSON: agent, devices, uplinks, buffer, assets
GET /healthz  200 while the core tasks run, 503 otherwise
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import __version__
from .events import format_time

if TYPE_CHECKING:
    from buffer import BufferStats
    from drivers.runner import DeviceHealth

    from .derive import AssetState
    from .uplinks.base import UplinkHealth


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
                      "uptime_s": round(now - self.started_at, 1), "healthy": self.alive},
            "devices": [_times_as_text(dataclasses.asdict(d)) for d in self.devices],
            "uplinks": [_times_as_text(dataclasses.asdict(u)) for u in self.uplinks],
            "buffer": buffer,
            "buffer_error": self.buffer_error,
            "alarms": ([{"key": "buffer.write", "severity": "critical",
                         "message": self.buffer_error, "raised_at": None}]
                       if self.buffer_error else [])
                      + [{"key": f"uplink.{u.uplink}.paused", "severity": "critical",
                          "message": u.alarm, "raised_at": None}
                         for u in self.uplinks if u.alarm]
                      + (buffer["alarms"] if buffer else []),
            "assets": {asset: _asset_view(st) for asset, st in self.assets.items()},
        }


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


class StatusServer:
    def __init__(self, board: StatusBoard, bind: str, port: int) -> None:
        self.board = board
        self.bind, self.port = bind, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()  # raises OSError if the port is taken: the agent must not start

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.board.snapshot(), dumps=_dumps)

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.board.alive:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready\n")


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, default=str)
