"""Run one device forever: connect, stream, and on failure back off and reconnect.

Retries and health live here once, not in each driver. A device going down is
logged once, and its recovery once; the status page reads `DeviceHealth`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import DriverError
from agent.shared import backoff_delay

from .base import Driver, Sample

log = logging.getLogger("floorlink.devices")


@dataclass
class DeviceHealth:
    device: str
    protocol: str
    state: str = "connecting"  # connecting | up | down
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    last_error_at: float | None = None  # cleared, with last_error, when data flows again
    # Tags the device answers for with an error while connected (the driver keeps it):
    # tag -> what the device said. Any makes an `up` device `degraded` on the status page.
    tag_errors: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    last_sample_at: float | None = None
    reconnects: int = 0
    # Protocol specifics the driver keeps up to date (OPC UA: subscriptions, clock offset).
    details: dict[str, object] = field(default_factory=dict)


async def run_device(driver: Driver, deliver: Callable[[list[Sample]], Awaitable[None]],
                     health: DeviceHealth, max_backoff: float = 10.0,
                     on_lost: Callable[[str, float], None] | None = None) -> None:
    """Read `driver` for ever, reconnecting with backoff. `on_lost(device, last sample
    time)` is told when the device stops delivering: derivation marks its assets' state
    as not known from then (the shift history's no-data time)."""
    attempt = 0
    # Values a driver read but left out as unchanged still count as read (the metric).
    unchanged = getattr(driver, "unchanged", 0)
    health.details = getattr(driver, "details", health.details)
    health.tag_errors = getattr(driver, "tag_errors", health.tag_errors)
    while True:
        try:
            await driver.open()
            async for batch in driver.batches():
                if health.state != "up":  # up means data flows, not merely connected
                    if health.state == "down":
                        log.info("device %s recovered after %.0fs", driver.device_id,
                                 time.time() - health.since)
                        health.reconnects += 1
                    health.state, health.since = "up", time.time()
                    health.last_error = health.last_error_at = None  # what kept it away is over
                    attempt = 0
                now_unchanged = getattr(driver, "unchanged", 0)
                health.samples += len(batch) + now_unchanged - unchanged
                unchanged = now_unchanged
                health.last_sample_at = time.time()  # the device answered, changed or not
                if batch:
                    await deliver(batch)  # blocks when the pipeline is full: polls stretch
        except DriverError as exc:
            if health.state != "down":
                log.warning("device %s down: %s", driver.device_id, exc)
                last = health.last_sample_at or health.since
                health.state, health.since = "down", time.time()
                if on_lost is not None:
                    on_lost(driver.device_id, last)
            health.last_error, health.last_error_at = str(exc), time.time()
        finally:
            await driver.close()
        await asyncio.sleep(backoff_delay(attempt, cap=max_backoff))
        attempt += 1


class DriverFactory:
    """Builds the driver for each configured device; protocol libraries load only when a
    device needs them, and Modbus devices on one line share its bus.

    `bound` names the tags ("device.tag") that assets use. A polled tag outside it is
    delivered only when its value changes (drivers/modbus/device.py says why that changes
    nothing downstream); None delivers every value read (a probe, a test)."""

    def __init__(self, bound: frozenset[str] | None = None) -> None:
        self._buses: Any = None
        self._bound = bound

    def __call__(self, device: object) -> Driver:
        from agent.settings.models import ModbusDeviceBase, OpcUaDevice

        if isinstance(device, OpcUaDevice):
            from .opcua.client import OpcUaDriver

            return OpcUaDriver(device)
        from .modbus.bus import BusRegistry
        from .modbus.device import ModbusDriver

        assert isinstance(device, ModbusDeviceBase), f"no driver for {device!r}"
        if self._buses is None:
            self._buses = BusRegistry()
        quiet = frozenset() if self._bound is None else frozenset(
            tag.name for tag in device.tags if f"{device.id}.{tag.name}" not in self._bound)
        return ModbusDriver(device, self._buses.bus_for(device), quiet)  # type: ignore[arg-type]


def make_driver(device: object) -> Driver:
    """A driver with a line of its own (fine for one device; use DriverFactory for many)."""
    return DriverFactory()(device)
