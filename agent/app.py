"""The running agent: one TaskGroup around devices, the writer, forwarders and status.

Start-up order matters for systemd: the config is already valid, then the
buffer opens, the status port binds, and only then is READY announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable

from buffer import Limits, Outbox, enforce
from drivers.base import Sample
from drivers.runner import DeviceHealth, DriverFactory, run_device

from .control.server import AgentLock, ControlServer
from .derive import DeriveContext, compile_assets, compile_devices
from .errors import BufferError
from .events import Event
from .pipeline import Pipeline
from .settings.models import Config, HttpsUplink, MqttUplink
from .settings.odoo import OdooUplink
from .status import StatusBoard, StatusServer
from .uplinks.base import Uplink
from .uplinks.forwarder import Forwarder
from .uplinks.https import HttpsPoster
from .uplinks.mqtt import MqttPublisher
from .uplinks.odoo.connector import OdooConnector

log = logging.getLogger("floorlink")

SAMPLE_QUEUE_SIZE = 1000
STOP_COMMIT_TIMEOUT = 5.0
STOP_DRAIN_TIMEOUT = 5.0  # well inside systemd's TimeoutStopSec=30
MAINTENANCE_INTERVAL = 1.0
FORWARDER_WINDOWS = 4


class Agent:
    def __init__(self, config: Config, on_event: Callable[[Event], None] | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self.board = StatusBoard(site=config.site, agent=config.agent.id)
        self.ready = asyncio.Event()
        self.outbox: Outbox | None = None
        self.uplinks: list[Uplink] = []
        self.forwarders: list[Forwarder] = []
        self.pipeline: Pipeline | None = None
        self._stop_requested = asyncio.Event()

    def request_stop(self) -> None:
        """Stop gracefully: confirm production, deliver what can be delivered, then exit."""
        self._stop_requested.set()

    async def run(self) -> None:
        config = self.config
        lock = AgentLock(config.buffer.path)
        try:
            config.buffer.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as exc:
            raise BufferError(f"cannot lock {lock.path}: {exc.strerror}; set buffer.path to a "
                              "writable place") from exc
        try:
            await self._run_locked()
        finally:
            lock.release()

    async def _run_locked(self) -> None:
        config = self.config
        limits = config.buffer.limits
        self.outbox = outbox = await Outbox.open(
            config.buffer.path, [u.id for u in config.uplinks], config.buffer.synchronous,
            Limits(int(limits.size), int(limits.hard_size), limits.telemetry_age))
        _report_opening(outbox)
        status: StatusServer | None = None
        control: ControlServer | None = None
        try:
            saved = await outbox.load_states()
            queue: asyncio.Queue[list[Sample]] = asyncio.Queue(maxsize=SAMPLE_QUEUE_SIZE)
            ctx = DeriveContext(site=config.site, agent=config.agent.id, epoch=outbox.epoch)
            self.pipeline = pipeline = Pipeline(
                compile_assets(config), saved, outbox, ctx, queue,
                commit_interval=config.buffer.commit_interval, on_event=self.on_event,
                device_specs=compile_devices(config))
            self.board.assets = pipeline.states
            self.uplinks = [_make_uplink(u, config) for u in config.uplinks]
            self.forwarders = [Forwarder(u, outbox, _window(s), s.max_rate, s.events)
                               for u, s in zip(self.uplinks, config.uplinks, strict=True)]
            self.board.uplinks = [u.health for u in self.uplinks]
            if config.status.enabled:
                status = StatusServer(self.board, config.status.bind, config.status.port)
                await status.start()
            control = await _start_control(outbox)
            async with asyncio.TaskGroup() as group:
                producers = []  # devices and the writer stop first, the forwarders last
                make_driver = DriverFactory()
                for device in config.devices:
                    health = DeviceHealth(device.id, device.protocol)
                    self.board.devices.append(health)
                    producers.append(group.create_task(
                        run_device(make_driver(device), queue.put, health),
                        name=f"device {device.id}"))
                producers.append(group.create_task(pipeline.run(), name="pipeline"))
                others = []
                for uplink, forwarder in zip(self.uplinks, self.forwarders, strict=True):
                    await uplink.start()
                    others.append(group.create_task(forwarder.run(),
                                                    name=f"forwarder {uplink.id}"))
                others.append(group.create_task(self._maintain(pipeline), name="maintenance"))
                self.board.alive = True
                self.ready.set()
                notify_systemd("READY=1")
                log.info("floorlink %s running: %d devices, %d assets, %d uplinks, status %s",
                         config.agent.id, len(config.devices), len(config.assets),
                         len(config.uplinks),
                         f"http://{config.status.bind}:{config.status.port}"
                         if config.status.enabled else "off")
                await self._stop_requested.wait()
                log.info("stopping: confirming production and delivering what is pending")
                self.board.alive = False
                notify_systemd("STOPPING=1")
                for task in producers:
                    task.cancel()
                await asyncio.wait(producers)
                await self._final_confirmation()
                await self._drain()
                for task in others:
                    task.cancel()
        finally:
            self.board.alive = False
            notify_systemd("STOPPING=1")
            if control is not None:
                await control.close()
            await self._shutdown(status)

    async def _maintain(self, pipeline: Pipeline) -> None:
        """Once a second, or at once when a write found no space: prune what every uplink
        has, enforce the limits, refresh the buffer's figures for the status page."""
        outbox = self.outbox
        assert outbox is not None
        loop = asyncio.get_running_loop()
        next_stats = 0.0
        while True:
            self.board.assets = pipeline.states
            outbox.pressure.clear()
            try:
                for forwarder in self.forwarders:
                    await forwarder.flush()  # drops are counted against fresh cursors
                await outbox.prune()
                healthy = [u.id for u in self.uplinks if u.health.connected]
                await enforce(outbox, healthy)
                if loop.time() >= next_stats:
                    # Counting a million-row backlog takes a while and shares the
                    # connection with the writer: refresh at most 5% of the time.
                    started = loop.time()
                    self.board.buffer = await outbox.stats()
                    next_stats = loop.time() + 20 * (loop.time() - started)
                self.board.buffer_error = pipeline.last_error
            except BufferError as exc:
                self.board.buffer_error = str(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.pressure.wait(), MAINTENANCE_INTERVAL)

    async def _final_confirmation(self) -> None:
        # If the disk refuses, the counts stay pending in the committed state and are
        # confirmed after the restart instead: late, never lost.
        assert self.pipeline is not None
        try:
            await asyncio.wait_for(self.pipeline.stop(), STOP_COMMIT_TIMEOUT)
        except (BufferError, TimeoutError) as exc:
            log.warning("final confirmation not committed (%s); it follows after restart", exc)

    async def _drain(self) -> None:
        """Wait, for a bounded time, until every uplink has acknowledged everything."""
        assert self.outbox is not None
        deadline = asyncio.get_running_loop().time() + STOP_DRAIN_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            try:
                stats = await self.outbox.stats()
            except BufferError:
                return
            for forwarder in self.forwarders:
                await forwarder.flush()
            if not any(sum(lanes.values()) for lanes in stats.backlog.values()):
                return
            await asyncio.sleep(0.1)
        log.info("stopping with events still buffered; they are sent after the next start")

    async def _shutdown(self, status: StatusServer | None) -> None:
        for forwarder in self.forwarders:
            with contextlib.suppress(BufferError):
                await forwarder.flush()
        for uplink in self.uplinks:
            await uplink.close()
        if status is not None:
            await status.close()
        if self.outbox is not None:
            await self.outbox.close()


def _report_opening(outbox: Outbox) -> None:
    if outbox.salvage is not None:
        log.error("%s", outbox.salvage.describe())
    if outbox.migrated_from is not None:
        log.info("buffer upgraded from schema %d; the old file is kept as %s",
                 outbox.migrated_from, outbox.migration_backup)


async def _start_control(outbox: Outbox) -> ControlServer | None:
    control = ControlServer(outbox)
    try:
        await control.start()
    except OSError as exc:
        # Not fatal: the plant keeps running; only `floorlink buffer` needs the agent stopped.
        log.warning("control socket %s not available (%s); `floorlink buffer` commands work "
                    "only while the agent is stopped", control.path, exc)
        return None
    return control


def _make_uplink(settings: MqttUplink | HttpsUplink | OdooUplink, config: Config) -> Uplink:
    if isinstance(settings, HttpsUplink):
        return HttpsPoster(settings, config)
    if isinstance(settings, OdooUplink):
        return OdooConnector(settings, config)
    return MqttPublisher(settings, config)


def _window(settings: MqttUplink | HttpsUplink | OdooUplink) -> int:
    if isinstance(settings, OdooUplink):
        return settings.max_inflight
    if isinstance(settings, HttpsUplink):
        # Enough submitted for full batches while one request is on its way.
        return max(settings.max_inflight, 2 * settings.batch.max_events)
    # paho itself keeps at most max_inflight messages on the wire; giving it a few
    # windows' worth queued lets its thread send the next one the moment an ack frees
    # a slot, without a round trip through the event loop (measured: ~+20% drain rate).
    return settings.max_inflight * FORWARDER_WINDOWS


def notify_systemd(message: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET, if systemd gave one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)


