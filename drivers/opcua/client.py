"""OPC UA driver: subscriptions and polled reads over one session. Reads only:
floorlink never writes to a PLC.

* Addresses (`nsu=` node ids, browse paths) are resolved at every session start.
* Requests are split to the server's OperationLimits (or `max_per_call`), and
  subscriptions hold at most `items_per_subscription` monitored items.
* Each subscription has a staleness watchdog: no publish response and no
  keep-alive for three keep-alive periods means the server stopped serving it
  while the connection looks fine. It is then created again, and its tags'
  next values are marked as coming after a gap. Unchanging values never trip
  it: the server sends keep-alives for those.
* A dead session (a failed keep-alive read, a lost connection) ends `batches()`
  with DeviceUnreachable; the runner backs off, reconnects and logs once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import DeviceUnreachable
from agent.settings.models import OpcUaDevice, OpcUaTag

from ..base import Sample
from . import nodes
from .session import open_session, server_clock_offset
from .values import to_sample

CLOSE_TIMEOUT = 2.0
log = logging.getLogger("floorlink.opcua")

STALE_KEEPALIVES = 3
TRUNCATED = "…[cut]"  # ends a string cut to max_string
WATCHDOG_PERIOD = 0.5


@dataclass
class _Subscription:
    tags: list[str]
    handle: Any = None
    stale_after: float = 0.0
    created_at: float = field(default_factory=time.monotonic)
    consumer: asyncio.Task[None] | None = None  # hands its notifications to the driver


class OpcUaDriver:
    def __init__(self, device: OpcUaDevice) -> None:
        self.device = device
        self.device_id = device.id
        self._tags: dict[str, OpcUaTag] = {t.name: t for t in device.tags}
        self._client: Any = None
        self._pending: deque[Sample] = deque()
        self._wakeup = asyncio.Event()
        self._tag_of_handle: dict[int, str] = {}
        self._handle_of_tag: dict[str, int] = {
            tag.name: index for index, tag in enumerate(device.tags, 1)}
        self._seen_since_open: set[str] = set()
        self._truncated: set[str] = set()  # tags whose over-long string was warned about
        self._lost: str | None = None
        self._subscriptions: list[_Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._node_ids: dict[str, Any] = {}
        self._limits = nodes.OperationLimits()
        # Typed handles on the mutable parts of `details`, which the status page shows.
        self._refused: dict[str, str] = {}
        self.tag_errors = self._refused  # what the status page lists as tags in error
        self._requests: dict[str, int] = {}
        self._recreated = 0
        self.details: dict[str, object] = {"subscriptions": 0, "monitored_items": 0,
                                           "polled": 0, "recreated_subscriptions": 0,
                                           "server_clock_offset_s": None, "unresolved": {},
                                           "refused_items": self._refused,
                                           "requests": self._requests}

    # ------------------------------------------------------------------ session

    async def open(self) -> None:
        device = self.device
        client = await open_session(
            device.endpoint, device.security, device.username,
            device.password.get_secret_value() if device.password else None, device.timeout,
            session_timeout=max(60.0, 6 * device.keepalive))
        self._client = client
        client.connection_lost_callback = self._connection_lost
        self._lost = None
        self._pending.clear()
        self._seen_since_open.clear()
        self._subscriptions = []
        self._tag_of_handle = {}
        self._requests.update(create_monitored_items=0, read=0)
        self._refused.clear()
        try:
            self.details["server_clock_offset_s"] = await server_clock_offset(client)
            self._limits = await nodes.OperationLimits.of(client, device.max_per_call)
            resolved = await nodes.resolve(client, device, self._limits)
            self._node_ids = resolved.node_ids
            self.details["unresolved"] = resolved.problems
            subscribed = [t.name for t in device.tags
                          if t.mode == "subscribe" and t.name in self._node_ids]
            for part in nodes.chunks(subscribed, device.items_per_subscription):
                self._subscriptions.append(await self._subscribe(list(part)))
            polled = [t for t in device.tags if t.mode == "poll" and t.name in self._node_ids]
            self._start_polling(polled)
        except DeviceUnreachable:
            raise
        except Exception as exc:  # asyncua raises many kinds; all mean this session failed
            raise DeviceUnreachable(
                f"{device.endpoint}: setting up the session failed: {exc or type(exc).__name__}"
            ) from exc
        self.details["subscriptions"] = len(self._subscriptions)
        self.details["monitored_items"] = sum(len(s.tags) for s in self._subscriptions)
        self.details["polled"] = len(polled)
        self._tasks.append(asyncio.get_running_loop().create_task(
            self._watch_subscriptions(), name=f"opcua watchdog {device.id}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        client, self._client = self._client, None
        if client is not None:
            try:
                # A goodbye a busy server does not answer soon is skipped: the socket
                # closes anyway, and the agent's stop must stay within its 10 s.
                async with asyncio.timeout(min(self.device.timeout, CLOSE_TIMEOUT)):
                    await client.disconnect()
            except Exception as exc:
                log.debug("%s: disconnect: %s", self.device_id, exc)
                try:
                    client.disconnect_socket()
                except Exception as inner:
                    log.debug("%s: closing the socket: %s", self.device_id, inner)

    async def _connection_lost(self, exc: Exception) -> None:
        self._lost = f"connection lost: {exc or type(exc).__name__}"
        self._wakeup.set()

    # ------------------------------------------------------------ subscriptions

    async def _subscribe(self, tags: list[str]) -> _Subscription:
        from asyncua import ua

        device = self.device
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = device.publishing_interval * 1000
        params.RequestedMaxKeepAliveCount = max(
            1, math.ceil(device.keepalive / device.publishing_interval))
        params.RequestedLifetimeCount = params.RequestedMaxKeepAliveCount * 6
        params.MaxNotificationsPerPublish = 0  # no limit: a burst arrives in one response
        params.PublishingEnabled = True
        params.Priority = 0
        # Iterator mode, unbounded: with a handler asyncua makes a task per notification
        # (about 5% of the agent's time at 2,500 changes/s); a queue never drops one.
        handle = await self._client.create_subscription(params, None, queue_maxsize=0)
        # The server may revise the interval and keep-alive count; staleness is judged
        # on what it promised, plus one request timeout for the answer to travel.
        revised = handle.parameters
        period = (revised.RequestedPublishingInterval / 1000
                  * max(1, revised.RequestedMaxKeepAliveCount))
        subscription = _Subscription(tags, handle,
                                     STALE_KEEPALIVES * period + device.timeout)
        subscription.consumer = asyncio.get_running_loop().create_task(
            self._consume(handle), name=f"opcua notifications {device.id}")
        self._tasks.append(subscription.consumer)
        requests = [self._item_request(name) for name in tags]
        # Known before the server answers: the first values may arrive while later
        # chunks are still being created.
        for name in tags:
            self._tag_of_handle[self._handle_of_tag[name]] = name

        async def create(part: Sequence[Any]) -> list[Any]:
            self._count("create_monitored_items")
            return list(await handle.create_monitored_items(list(part)))

        results = await nodes.in_chunks(requests, self._limits.monitored_items, create)
        for name, result in zip(tags, results, strict=True):
            if isinstance(result, ua.StatusCode):
                self._refused[name] = result.name
                self._tag_of_handle.pop(self._handle_of_tag[name], None)
                log.warning("%s.%s: the server refused the monitored item: %s",
                            self.device_id, name, result.name)
        return subscription

    def _item_request(self, name: str) -> Any:
        from asyncua import ua

        tag = self._tags[name]
        read = ua.ReadValueId()
        read.NodeId = self._node_ids[name]
        read.AttributeId = ua.AttributeIds.Value
        monitoring = ua.MonitoringParameters()
        monitoring.ClientHandle = self._handle_of_tag[name]
        interval = (tag.sampling_interval if tag.sampling_interval is not None
                    else self.device.publishing_interval)
        monitoring.SamplingInterval = interval * 1000
        monitoring.QueueSize = tag.queue_size
        monitoring.DiscardOldest = True
        if tag.server_deadband is not None:
            deadband = ua.DataChangeFilter()
            deadband.Trigger = ua.DataChangeTrigger.StatusValue
            deadband.DeadbandType = ua.DeadbandType.Absolute
            deadband.DeadbandValue = tag.server_deadband
            monitoring.Filter = deadband
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = read
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = monitoring
        return request

    async def _watch_subscriptions(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD)
            for index, subscription in enumerate(self._subscriptions):
                last = subscription.handle.last_publish_at or subscription.created_at
                silent = time.monotonic() - max(last, subscription.created_at)
                if silent < subscription.stale_after:
                    continue
                log.warning("%s: a subscription of %d items sent nothing, not even a "
                            "keep-alive, for %.0fs; creating it again", self.device_id,
                            len(subscription.tags), silent)
                try:
                    self._subscriptions[index] = await self._recreate(subscription)
                except Exception as exc:
                    self._lost = f"recreating a stale subscription failed: {exc}"
                    self._wakeup.set()
                    return

    async def _recreate(self, stale: _Subscription) -> _Subscription:
        for name in stale.tags:
            self._tag_of_handle.pop(self._handle_of_tag[name], None)
            self._seen_since_open.discard(name)  # the next value comes after a gap
        try:
            async with asyncio.timeout(self.device.timeout):
                await stale.handle.delete()
        except Exception as exc:  # the server may have dropped it already
            log.debug("%s: deleting the stale subscription: %s", self.device_id, exc)
        if stale.consumer is not None:
            stale.consumer.cancel()
            self._tasks.remove(stale.consumer)
        fresh = await self._subscribe(stale.tags)
        self._recreated += 1
        self.details["recreated_subscriptions"] = self._recreated
        return fresh

    async def _consume(self, handle: Any) -> None:
        from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent

        async for event in handle:  # a get() from a non-empty queue does not yield
            if isinstance(event, DataChangeEvent):
                self.datachange_notification(event.node, event.value, event.data)
            elif isinstance(event, StatusChangeEvent):
                self.status_change_notification(event.notification)

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        item = data.monitored_item
        tag = self._tag_of_handle.get(item.ClientHandle)
        if tag is None:
            return  # a late notification from a subscription we have replaced
        self._emit(tag, item.Value)

    def status_change_notification(self, status: Any) -> None:
        log.warning("%s: subscription status changed: %s", self.device_id, status)

    def _emit(self, tag: str, data_value: Any) -> None:
        first = tag not in self._seen_since_open
        self._seen_since_open.add(tag)
        sample = to_sample(self.device_id, tag, data_value, first)
        if isinstance(sample.value, str) and len(sample.value) > self.device.max_string:
            sample = sample._replace(value=self._capped(tag, sample.value))
        self._pending.append(sample)
        self._wakeup.set()

    def _capped(self, tag: str, text: str) -> str:
        """A string no PLC tag needs (a 10 MB work order took the agent from 77 to 350 MB
        and made an 11 MB status page): cut to max_string, marked, warned once per tag."""
        limit = self.device.max_string
        if tag not in self._truncated:
            self._truncated.add(tag)
            log.warning("%s.%s: a string of %d characters, cut to %d (max_string); events "
                        "and the status page carry the cut value", self.device_id, tag,
                        len(text), limit)
        return text[:limit - len(TRUNCATED)] + TRUNCATED

    # ------------------------------------------------------------------ polling

    def _start_polling(self, tags: list[OpcUaTag]) -> None:
        groups: dict[float, list[str]] = {}
        for tag in tags:
            groups.setdefault(tag.poll_interval or self.device.poll_interval, []).append(tag.name)
        for interval, names in sorted(groups.items()):
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._poll(interval, names), name=f"opcua poll {self.device_id} {interval}s"))

    async def _poll(self, interval: float, names: list[str]) -> None:
        from asyncua import ua

        async def read(part: Sequence[str]) -> list[Any]:
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            for name in part:
                item = ua.ReadValueId()
                item.NodeId = self._node_ids[name]
                item.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(item)
            self._count("read")
            return list(await self._client.uaclient.read(params))

        next_at = time.monotonic()
        while True:
            try:
                answers = await nodes.in_chunks(names, self._limits.read, read)
            except Exception as exc:
                self._lost = f"polling failed: {exc or type(exc).__name__}"
                self._wakeup.set()
                return
            for name, answer in zip(names, answers, strict=True):
                self._emit(name, answer)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if next_at < time.monotonic() - interval:
                next_at = time.monotonic()  # a slow server: skip ticks rather than burst

    def _count(self, request: str) -> None:
        self._requests[request] += 1

    # ------------------------------------------------------------------ samples

    async def batches(self) -> AsyncIterator[list[Sample]]:
        from asyncua import ua

        while True:
            try:  # asyncio.timeout, not wait_for: see agent.pipeline
                async with asyncio.timeout(self.device.keepalive):
                    await self._wakeup.wait()
            except TimeoutError:
                # Quiet: ask the server how it is, so a dead session is noticed even
                # when no value changes.
                try:
                    async with asyncio.timeout(self.device.timeout):
                        await self._client.nodes.server_state.read_value()
                except (TimeoutError, OSError, ConnectionError, ua.UaError) as exc:
                    raise DeviceUnreachable(f"{self.device.endpoint}: session lost: "
                                            f"{exc or type(exc).__name__}") from exc
                continue
            self._wakeup.clear()
            if self._lost is not None:
                raise DeviceUnreachable(f"{self.device.endpoint}: {self._lost}")
            batch = list(self._pending)
            self._pending.clear()
            if batch:
                yield batch
