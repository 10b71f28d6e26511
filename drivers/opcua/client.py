"""OPC UA subscription driver. Reads only: floorlink never writes to a PLC.

Node ids given with a namespace URI (`nsu=...`) are resolved against the
server's namespace array at every session start, so a server that reorders its
namespaces after a restart does not break the mapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from agent.errors import DeviceUnreachable, TagReadError
from agent.settings.models import OpcUaDevice

from ..base import Quality, Sample

log = logging.getLogger("floorlink.opcua")

CONNECTION_CHECK_INTERVAL = 1.0


class OpcUaDriver:
    def __init__(self, device: OpcUaDevice) -> None:
        self.device = device
        self.device_id = device.id
        self._client: Any = None
        self._pending: deque[Sample] = deque()
        self._wakeup = asyncio.Event()
        self._tag_of_node: dict[str, str] = {}
        self._seen_since_open: set[str] = set()
        self._lost: BaseException | None = None

    async def open(self) -> None:
        from asyncua import Client, ua

        # asyncua's own reconnect stays off: the runner reconnects, logs once and marks the gap.
        client = Client(self.device.endpoint, timeout=self.device.timeout, auto_reconnect=False)
        client.connection_lost_callback = self._connection_lost
        if self.device.username:
            client.set_user(self.device.username)
        if self.device.password:
            client.set_password(self.device.password.get_secret_value())
        try:
            await client.connect()
        except (TimeoutError, OSError, ua.UaError) as exc:
            raise DeviceUnreachable(f"cannot connect to {self.device.endpoint}: "
                                    f"{exc or type(exc).__name__}") from exc
        self._client = client
        self._lost = None
        self._pending.clear()
        self._seen_since_open.clear()
        try:
            nodes = await self._resolve_nodes(client)
            subscription = await client.create_subscription(
                self.device.publishing_interval * 1000, self)
            results = await subscription.subscribe_data_change(list(nodes.values()))
        except (TimeoutError, OSError, ua.UaError) as exc:
            raise DeviceUnreachable(f"{self.device.endpoint}: subscribing failed: {exc}") from exc
        for tag, result in zip(nodes, results, strict=True):
            if isinstance(result, ua.StatusCode):
                log.warning("%s.%s: the server refused the monitored item: %s",
                            self.device_id, tag, result.name)

    async def _resolve_nodes(self, client: Any) -> dict[str, Any]:
        from asyncua import ua

        namespaces: list[str] = await client.get_namespace_array()
        nodes: dict[str, Any] = {}
        for tag in self.device.tags:
            text = tag.node
            if text.startswith("nsu="):
                uri, rest = text[4:].split(";", 1)
                if uri not in namespaces:
                    raise TagReadError(
                        f"{self.device_id}.{tag.name}: the server has no namespace '{uri}'; "
                        f"it offers: {', '.join(namespaces)}")
                text = f"ns={namespaces.index(uri)};{rest}"
            node_id = ua.NodeId.from_string(text)
            nodes[tag.name] = client.get_node(node_id)
            self._tag_of_node[node_id.to_string()] = tag.name
        return nodes

    # asyncua calls these from its receive task, in our event loop.
    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        tag = self._tag_of_node.get(node.nodeid.to_string())
        if tag is None:
            return
        data_value = data.monitored_item.Value
        stamp = data_value.SourceTimestamp or data_value.ServerTimestamp
        first = tag not in self._seen_since_open
        self._seen_since_open.add(tag)
        self._pending.append(Sample(
            self.device_id, tag, _plain(value), _quality(data_value.StatusCode),
            stamp.timestamp() if isinstance(stamp, datetime) else time.time(), first))
        self._wakeup.set()

    async def _connection_lost(self, exc: Exception) -> None:
        self._lost = exc
        self._wakeup.set()

    def status_change_notification(self, status: Any) -> None:
        log.warning("%s: subscription status changed: %s", self.device_id, status)

    async def batches(self) -> AsyncIterator[list[Sample]]:
        from asyncua import ua

        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), CONNECTION_CHECK_INTERVAL)
            except TimeoutError:
                try:
                    await self._client.check_connection()
                except (TimeoutError, OSError, ConnectionError, ua.UaError) as exc:
                    raise DeviceUnreachable(f"{self.device.endpoint}: session lost: {exc}") from exc
                continue
            self._wakeup.clear()
            if self._lost is not None:
                raise DeviceUnreachable(f"{self.device.endpoint}: session lost: {self._lost}")
            batch = list(self._pending)
            self._pending.clear()
            if batch:
                yield batch

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), self.device.timeout)
            except Exception as exc:
                log.debug("%s: disconnect: %s", self.device_id, exc)


def _quality(status: Any) -> Quality:
    value = int(getattr(status, "value", 0))
    severity = value >> 30
    return "good" if severity == 0 else "uncertain" if severity == 1 else "bad"


def _plain(value: Any) -> object:
    if isinstance(value, datetime):
        return value.timestamp()
    return value
