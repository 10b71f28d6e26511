"""Modbus TCP polling driver. Reads only: floorlink never writes to a PLC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from agent.errors import DeviceUnreachable
from agent.settings.models import ModbusTcpDevice

from ..base import Sample
from .decode import DecodeError, decode_registers
from .plan import BIT_TABLES, ReadRequest, plan_reads

log = logging.getLogger("floorlink.modbus")

_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "server device failure", 6: "server device busy",
                    10: "gateway path unavailable", 11: "gateway target failed to respond"}
_READERS = {"coil": "read_coils", "discrete_input": "read_discrete_inputs",
            "holding_register": "read_holding_registers",
            "input_register": "read_input_registers"}


class ModbusTcpDriver:
    def __init__(self, device: ModbusTcpDevice) -> None:
        self.device = device
        self.device_id = device.id
        self.plan = plan_reads(list(device.tags), device.max_gap)
        self.tag_errors: dict[str, str] = {}
        self._client: Any = None

    async def open(self) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        # reconnect_delay=0: reconnecting is the runner's job, with its own backoff and logs.
        self._client = AsyncModbusTcpClient(
            self.device.host, port=self.device.port, timeout=self.device.timeout,
            retries=0, reconnect_delay=0, name=self.device_id)
        if not await self._client.connect():
            raise DeviceUnreachable(
                f"cannot connect to {self.device.host}:{self.device.port} "
                f"(no Modbus TCP server answering within {self.device.timeout:g}s)")

    async def batches(self) -> AsyncIterator[list[Sample]]:
        loop = asyncio.get_running_loop()
        first = True
        next_poll = loop.time()
        while True:
            samples: list[Sample] = []
            for request in self.plan:
                samples.extend(await self._read(request, after_gap=first))
            first = False
            yield samples
            # Polls stretch rather than pile up when a read or the consumer is slow.
            next_poll = max(next_poll + self.device.poll_interval, loop.time())
            await asyncio.sleep(next_poll - loop.time())

    async def _read(self, request: ReadRequest, after_gap: bool) -> list[Sample]:
        from pymodbus.exceptions import ModbusException

        reader = getattr(self._client, _READERS[request.table])
        try:
            response = await reader(request.start, count=request.count,
                                    device_id=self.device.unit)
        except (TimeoutError, ModbusException, OSError) as exc:
            raise DeviceUnreachable(
                f"{request.table} {request.start}+{request.count}: {exc}") from exc
        now = time.time()
        if response.isError():
            code = getattr(response, "exception_code", None)
            reason = f"Modbus exception {code} ({_EXCEPTION_NAMES.get(code or 0, 'unknown')})"
            return [self._bad(tag, now, after_gap,
                              f"{reason} reading {request.table} {tag.location[1]}")
                    for tag in request.tags]
        samples = []
        for tag in request.tags:
            offset = tag.location[1] - request.start
            try:
                if request.table in BIT_TABLES:
                    value: object = bool(response.bits[offset])
                else:
                    value = decode_registers(response.registers[offset:offset + tag.width], tag)
            except (DecodeError, IndexError, ValueError) as exc:
                samples.append(self._bad(tag, now, after_gap, f"cannot decode: {exc}"))
                continue
            if tag.name in self.tag_errors:
                log.info("%s.%s readable again", self.device_id, tag.name)
                del self.tag_errors[tag.name]
            samples.append(Sample(self.device_id, tag.name, value, "good", now, after_gap))
        return samples

    def _bad(self, tag: Any, now: float, after_gap: bool, why: str) -> Sample:
        if self.tag_errors.get(tag.name) != why:
            log.warning("%s.%s: %s", self.device_id, tag.name, why)  # once per distinct error
            self.tag_errors[tag.name] = why
        return Sample(self.device_id, tag.name, None, "bad", now, after_gap)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
