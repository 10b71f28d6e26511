"""The running agent: one TaskGroup around devices, the writer, forwarders and status.

Start-up order matters for systemd: the config is already valid, then the
buffer opens, the status port binds, and only then is READY announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from buffer import Outbox, enforce, free_space
from buffer.history import record_restart
from drivers.runner import DeviceHealth, DriverFactory, run_device

from .control.server import AgentLock, ControlServer
from .derive import DeriveContext, compile_assets, compile_devices
from .derive.spec import bound_tags
from .errors import BufferError, ConfigError
from .events import Event
from .pipeline import Pipeline
from .redact import register as register_secrets
from .reload import plan
from .settings import load_config
from .settings.models import Config, Device, HttpsUplink, MqttUplink, OpcUaDevice
from .settings.odoo import OdooUplink
from .settings.sparkplug import SparkplugUplink
from .shared import QueueItem
from .shift.view import SHIFT_REFRESH, shift_views
from .status.auth import status_users
from .status.board import StatusBoard
from .status.line import LineDesk
from .status.metrics import AgentMetrics
from .status.operators import LineGate, Operator, line_operators
from .status.server import StatusServer
from .systemd import notify, watchdog_interval
from .uplinks import certificates
from .uplinks.base import Uplink
from .uplinks.forwarder import Forwarder
from .uplinks.mqtt import MqttPublisher

log = logging.getLogger("floorlink")

SAMPLE_QUEUE_SIZE = 1000
# SIGTERM to exit stays under 10 s: confirm, drain, then close the uplinks.
STOP_COMMIT_TIMEOUT = 3.0
STOP_DRAIN_TIMEOUT = 3.0  # + device goodbyes (<=2 s) + uplink goodbyes (<=2 s)
MAINTENANCE_INTERVAL = 1.0


class Agent:
    def __init__(self, config: Config, on_event: Callable[[Event], None] | None = None,
                 config_path: Path | None = None) -> None:
        self.config = config
        register_secrets(config)
        self.config_path = config_path  # what SIGHUP reads again
        self.on_event = on_event
        self.board = StatusBoard(site=config.site, agent=config.agent.id,
                                 config_path=str(config_path) if config_path else None,
                                 config_loaded_at=time.time())
        self.metrics = AgentMetrics(self.board)
        self.ready = asyncio.Event()
        self.outbox: Outbox | None = None
        self.uplinks: list[Uplink] = []
        self.forwarders: list[Forwarder] = []
        self.pipeline: Pipeline | None = None
        self._stop_requested = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._forwarder_tasks: dict[str, asyncio.Task[None]] = {}
        self._sample_queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=SAMPLE_QUEUE_SIZE)
        # Tags no asset uses go out only when they change (drivers/modbus/device.py).
        self._make_driver = DriverFactory(bound=bound_tags(config))
        self._status_users: dict[str, str] | None = None
        self._operators: list[Operator] | None = None
        self._line_gate: LineGate | None = None

    def request_stop(self) -> None:
        """Stop gracefully: confirm production, deliver what can be delivered, then exit."""
        self._stop_requested.set()

    def request_reload(self) -> None:
        """Read the configuration file again (SIGHUP) and apply what changed."""
        self._reload_requested.set()

    async def run(self) -> None:
        config = self.config
        self._status_users = status_users(config)  # before anything starts: exit 78 if bad
        self._operators = line_operators(config)
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
            limits.to_limits())
        _report_opening(outbox)
        await record_restart(outbox, time.time())  # the shift figures' gaps
        self.board.buffer_open = True
        self.board.other_certificates = _device_certificates(config)
        status: StatusServer | None = None
        control: ControlServer | None = None
        try:
            saved = await outbox.load_states()
            ctx = DeriveContext(site=config.site, agent=config.agent.id, epoch=outbox.epoch,
                                telemetry_batch=config.telemetry.events == "batch")
            self.pipeline = pipeline = Pipeline(
                compile_assets(config), saved, outbox, ctx, self._sample_queue,
                commit_interval=config.buffer.commit_interval, on_event=self.on_event,
                device_specs=compile_devices(config))
            self.board.assets = pipeline.states
            # Assets and their tags change only with a restart (see reload.py): once.
            self.board.asset_state_devices = {
                asset.id: asset.state.tag.split(".", 1)[0] for asset in config.assets}
            self.board.events_by_type = pipeline.events_by_type
            self.uplinks = [_make_uplink(u, config, outbox) for u in config.uplinks]
            self.forwarders = [self._make_forwarder(u, s)
                               for u, s in zip(self.uplinks, config.uplinks, strict=True)]
            self.board.uplinks = [u.health for u in self.uplinks]
            if config.status.enabled:
                status = StatusServer(self.board, config.status.bind, config.status.port,
                                      self.metrics, self._status_users,
                                      line=self._line_desk(pipeline, outbox))
                await status.start()
            control = await _start_control(outbox)
            async with asyncio.TaskGroup() as group:
                self._group = group
                for device in config.devices:  # devices and the writer stop first
                    self._start_device(device)
                core = [group.create_task(pipeline.run(), name="pipeline")]
                for uplink in self.uplinks:
                    await uplink.start()
                    self._start_forwarder(uplink.id)
                self.board.uplinks_started = True
                others = [group.create_task(self._maintain(pipeline), name="maintenance"),
                          group.create_task(self._reload_on_request(), name="reload")]
                core.append(others[0])
                others.append(group.create_task(self._feed_watchdog(pipeline, core),
                                                name="watchdog"))
                self.board.alive = True
                self.ready.set()
                notify("READY=1")
                log.info("floorlink %s running: %d devices, %d assets, %d uplinks, status %s",
                         config.agent.id, len(config.devices), len(config.assets),
                         len(config.uplinks),
                         f"http://{config.status.bind}:{config.status.port}"
                         if config.status.enabled else "off")
                await self._stop_requested.wait()
                log.info("stopping: confirming production and delivering what is pending")
                self.board.alive = False
                notify("STOPPING=1")
                others[1].cancel()  # no reload half-way through a stop
                producers = [*self._device_tasks.values(), core[0]]
                for task in producers:
                    task.cancel()
                await asyncio.wait(producers)
                await self._final_confirmation()
                await self._drain()
                for task in [*self._forwarder_tasks.values(), *others]:
                    task.cancel()
        finally:
            self.board.alive = False
            notify("STOPPING=1")
            if control is not None:
                await control.close()
            await self._shutdown(status)

    def _line_desk(self, pipeline: Pipeline, outbox: Outbox) -> LineDesk | None:
        """The operators' page, when operators are configured: its choices go into the
        pipeline's queue, like the drivers' samples."""
        if not self._operators:
            return None

        def locked(until: float) -> None:
            self.board.line_locked_until = until

        self._line_gate = LineGate(self._operators)
        return LineDesk(self._line_gate, outbox, pipeline.specs,
                        self._sample_queue.put, on_lock=locked)

    def _make_forwarder(self, uplink: Uplink, settings: UplinkSettings) -> Forwarder:
        return Forwarder(uplink, self._outbox(), _window(settings), settings.max_rate,
                         settings.events, self.metrics.latency_observer(uplink.id))

    def _outbox(self) -> Outbox:
        assert self.outbox is not None
        return self.outbox

    def _start_device(self, device: Device) -> None:
        assert self._group is not None
        health = DeviceHealth(device.id, device.protocol)
        known = [d.device for d in self.board.devices]
        if device.id in known:  # a restart keeps its place on the status page
            self.board.devices[known.index(device.id)] = health
        else:
            self.board.devices.append(health)
        self._device_tasks[device.id] = self._group.create_task(
            run_device(self._make_driver(device), self._sample_queue.put, health,
                       device.max_backoff, on_lost=self._device_lost),
            name=f"device {device.id}")

    def _device_lost(self, device: str, last_sample_at: float) -> None:
        if self.pipeline is not None:
            self.pipeline.device_lost(device, last_sample_at)

    def _start_forwarder(self, uplink_id: str) -> None:
        assert self._group is not None
        index = [u.id for u in self.uplinks].index(uplink_id)
        self._forwarder_tasks[uplink_id] = self._group.create_task(
            self.forwarders[index].run(), name=f"forwarder {uplink_id}")

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload()

    async def reload(self) -> None:
        """Apply the configuration file as it is now. A file that does not load leaves the
        running configuration alone; the status page shows why."""
        if self.config_path is None:
            log.warning("reload asked for, but this agent was not started from a file")
            return
        try:
            loaded = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.board.config_error = f"reload refused, still running the previous config: {exc}"
            log.error("configuration reload refused; the previous configuration keeps "
                      "running: %s", exc)
            return
        steps, applied = plan(self.config, loaded)
        self.board.config_error = None
        self._reload_operators(loaded)
        self.board.restart_needed = steps.restart_needed
        if steps.restart_needed:
            log.warning("configuration reloaded; these changes wait for a restart "
                        "(systemctl restart floorlink): %s", ", ".join(steps.restart_needed))
        log.info("configuration reloaded: %s", steps.describe())
        for device_id in steps.devices_stop:
            task = self._device_tasks.pop(device_id)
            task.cancel()
            await asyncio.wait([task])
        for device in applied.devices:
            if device.id in steps.devices_start:
                self._start_device(device)
        for uplink_id in steps.uplinks_restart:
            await self._restart_uplink(uplink_id, applied)
        self.config = applied
        self.board.config_loaded_at = time.time()

    def _reload_operators(self, loaded: Config) -> None:
        """The operators file is read again on every reload: a shift lead adds a person
        without a restart. (Turning the line page on or off waits for one.)"""
        if self._line_gate is None or loaded.status.operators_file is None:
            return
        try:
            operators = line_operators(loaded)
        except ConfigError as exc:
            self.board.config_error = f"the operators file was not reloaded: {exc}"
            log.error("line page: the operators file was not reloaded; the previous "
                      "operators keep their logins: %s", exc)
            return
        if operators:
            self._line_gate.replace_operators(operators)
            log.info("line page: %d operator(s)", len(operators))

    async def _restart_uplink(self, uplink_id: str, config: Config) -> None:
        """Unacknowledged events stay behind the old forwarder's cursor: the new one
        sends them again (at least once, and the event id lets the receiver tell)."""
        index = [u.id for u in self.uplinks].index(uplink_id)
        task = self._forwarder_tasks.pop(uplink_id)
        task.cancel()
        await asyncio.wait([task])
        with contextlib.suppress(BufferError):
            await self.forwarders[index].flush()
        await self.uplinks[index].close()
        settings = next(u for u in config.uplinks if u.id == uplink_id)
        uplink = _make_uplink(settings, config, self._outbox())
        self.uplinks[index] = uplink
        self.forwarders[index] = self._make_forwarder(uplink, settings)
        self.board.uplinks = [u.health for u in self.uplinks]
        await uplink.start()
        self._start_forwarder(uplink_id)

    async def _feed_watchdog(self, pipeline: Pipeline, core: list[asyncio.Task[None]]) -> None:
        """WATCHDOG=1 every half WatchdogSec, but only while the derivation loop goes round
        and the core tasks live: a wedged agent is restarted by systemd, not left mute."""
        interval = watchdog_interval()
        if interval is None:
            return
        stalled = False
        while True:
            stale = time.monotonic() - pipeline.heartbeat
            alive = not any(task.done() for task in core)
            if alive and stale < max(2 * interval, 2.0):
                notify("WATCHDOG=1")
                if stalled:
                    log.info("derivation loop going round again; watchdog fed")
                stalled = False
            elif not stalled:
                log.error("derivation loop has not gone round for %.1f s; no longer feeding "
                          "the systemd watchdog", stale)
                stalled = True
            await asyncio.sleep(interval)

    async def _maintain(self, pipeline: Pipeline) -> None:
        """Once a second, or at once when a write found no space: prune what every uplink
        has, enforce the limits, refresh the buffer's figures for the status page."""
        outbox = self.outbox
        assert outbox is not None
        loop = asyncio.get_running_loop()
        next_stats = next_shifts = 0.0
        while True:
            self.board.assets = pipeline.states
            disk_full = outbox.pressure.is_set()
            outbox.pressure.clear()
            try:
                for forwarder in self.forwarders:
                    await forwarder.flush()  # drops are counted against fresh cursors
                await outbox.prune()
                healthy = [u.id for u in self.uplinks if u.health.connected]
                handed = {f.uplink.id: f.handed for f in self.forwarders}
                await enforce(outbox, healthy, handed=handed)
                if disk_full:
                    await free_space(outbox, healthy, handed)
                else:
                    await outbox.keep_reserve()
                if loop.time() >= next_stats:
                    # Counting a million-row backlog takes a while and shares the
                    # connection with the writer: refresh at most 5% of the time.
                    started = loop.time()
                    self.board.buffer = await outbox.stats()
                    next_stats = loop.time() + 20 * (loop.time() - started)
                if loop.time() >= next_shifts:
                    self.board.shifts = await shift_views(outbox, pipeline.specs, time.time())
                    next_shifts = loop.time() + SHIFT_REFRESH
                self.board.buffer_error = pipeline.last_error
                self.board.commits = pipeline.commits
            except BufferError as exc:
                self.board.buffer_error = str(exc)
            with contextlib.suppress(TimeoutError):  # timeout, not wait_for: see Pipeline
                async with asyncio.timeout(MAINTENANCE_INTERVAL):
                    await outbox.pressure.wait()

    async def _final_confirmation(self) -> None:
        # If the disk refuses, the counts stay pending in the committed state and are
        # confirmed after the restart instead: late, never lost.
        assert self.pipeline is not None
        try:
            async with asyncio.timeout(STOP_COMMIT_TIMEOUT):
                await self.pipeline.stop()
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


UplinkSettings = MqttUplink | HttpsUplink | OdooUplink | SparkplugUplink


def _device_certificates(config: Config) -> list[dict[str, object]]:
    statuses = []
    for device in config.devices:
        if isinstance(device, OpcUaDevice) and device.security.certificate is not None:
            statuses += certificates.from_file(device.security.certificate, device.id,
                                                     "OPC UA client")
    certificates.warn_if_expiring(statuses)
    return [status.view() for status in statuses]


def _make_uplink(settings: UplinkSettings, config: Config, outbox: Outbox) -> Uplink:
    # Imported on demand: an MQTT-only agent does not carry httpx and the Odoo client.
    if isinstance(settings, HttpsUplink):
        from .uplinks.https import HttpsPoster

        return HttpsPoster(settings, config)
    if isinstance(settings, OdooUplink):
        from .uplinks.odoo.connector import OdooConnector

        return OdooConnector(settings, config)
    if isinstance(settings, SparkplugUplink):
        from .uplinks.sparkplug.uplink import SparkplugNode  # protobuf: 5.5 MB

        return SparkplugNode(settings, config, outbox)  # its births read the buffer
    return MqttPublisher(settings, config)


def _window(settings: UplinkSettings) -> int:
    if isinstance(settings, OdooUplink | SparkplugUplink):
        return settings.max_inflight
    if isinstance(settings, HttpsUplink):
        # Enough submitted for full batches while one request is on its way.
        return max(settings.max_inflight, 2 * settings.batch.max_events)
    # MQTT: the forwarder's window is what keeps at most max_inflight messages on the
    # wire (paho's own limit is off: with it, paho scanned every message it held on
    # each PUBACK, the largest cost of a drain once paho ran on the loop).
    return settings.max_inflight
