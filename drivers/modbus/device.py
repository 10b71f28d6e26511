"""Modbus polling driver for one unit (TCP, RTU, or RTU over TCP). Reads only: floorlink
never writes to a PLC.

A merged read that draws an exception response (say, illegal data address) is split in
halves until the failing address is isolated: that tag is reported bad, with the address
and the exception, and every other tag keeps flowing. The refined plan is kept for the
session, so the failing read is not repeated on every poll.

Tags no asset uses (telemetry only, or nothing at all) are delivered only when their value
changes: polling reads them every time, but an unchanged value costs no sample. What
derivation does with such a value is the same either way (a repeated value moves no
deadband and publishes nothing; `publish: every` and `min_interval` run on the clock from
the value they remember). Tags an asset uses go out on every poll: dwell times, rates and
"last seen" are measured from them. After a (re)connect, every tag goes out once.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

from agent.errors import DeviceUnreachable
from agent.settings.models import ModbusDevice, ModbusTag

from ..base import Sample, new_sample
from .bus import ModbusBus, UnitSilent
from .decode import DecodeError, Decoder, compile_decoder
from .plan import BIT_TABLES, ReadRequest, plan_reads

log = logging.getLogger("floorlink.modbus")

# tag, its name, where it starts in the response, decoder
Compiled = tuple[ModbusTag, str, int, Decoder]

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 6: "server device busy",
                   10: "gateway path unavailable", 11: "gateway target failed to respond"}


def describe_exception(code: int | None) -> str:
    return f"Modbus exception {code} ({EXCEPTION_NAMES.get(code or 0, 'unknown')})"


_NOTHING = object()


class ModbusDriver:
    def __init__(self, device: ModbusDevice, bus: ModbusBus,
                 changes_only: frozenset[str] = frozenset()) -> None:
        self.device = device
        self.device_id = device.id
        self.bus = bus
        # Tag names delivered only when their value changes, and the last value delivered.
        self.changes_only = changes_only
        self._delivered: dict[str, object] = {}
        self.unchanged = 0  # values read and left out as unchanged (the runner counts them)
        self.initial_plan = plan_reads(list(device.tags), device.max_gap)
        self.plan = list(self.initial_plan)
        self.tag_errors: dict[str, str] = {}
        self._holding_bus = False
        # By identity: hashing a request hashes every tag model in it, on every poll.
        self._decoders: dict[int, tuple[ReadRequest, list[Compiled]]] = {}

    async def open(self) -> None:
        if not self._holding_bus:
            self.bus.acquire()
            self._holding_bus = True
        self.plan = list(self.initial_plan)  # the device may have been fixed meanwhile
        self._delivered.clear()  # what happened while away is unknown: everything goes out
        await self.bus.open_line()

    async def batches(self) -> AsyncIterator[list[Sample]]:
        loop = asyncio.get_running_loop()
        first = True
        next_poll = loop.time()
        while True:
            samples: list[Sample] = []
            for request in list(self.plan):
                samples.extend(await self._read(request, after_gap=first))
            first = False
            yield samples
            # Polls stretch rather than pile up when a read or the consumer is slow.
            next_poll = max(next_poll + self.device.poll_interval, loop.time())
            delay = next_poll - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def read_raw(self, request: ReadRequest) -> Any:
        try:
            return await self.bus.read(self.device.unit, request.table, request.start,
                                       request.count)
        except UnitSilent as exc:
            raise DeviceUnreachable(str(exc)) from exc

    async def _read(self, request: ReadRequest, after_gap: bool) -> list[Sample]:
        response = await self.read_raw(request)
        now = time.time()
        if response.isError():
            if len(request.tags) > 1:
                return await self._split(request, after_gap)
            (tag,) = request.tags
            code = getattr(response, "exception_code", None)
            return [self._bad(tag, now, after_gap,
                              f"{describe_exception(code)} reading {request.table} "
                              f"{tag.location[1]}")]
        words = response.bits if request.table in BIT_TABLES else response.registers
        if len(words) < request.count:
            return [self._bad(tag, now, after_gap,
                              f"short answer: {len(words)} of {request.count} values")
                    for tag in request.tags]
        compiled, device_id = self._compiled(request), self.device_id
        if not self.tag_errors:
            try:  # the common case, every tag decodes: one pass, no per-tag bookkeeping
                if not self.changes_only:
                    return [new_sample(Sample, (device_id, name, decode(words, start), "good",
                                                now, after_gap, None))
                            for _, name, start, decode in compiled]
                values = [decode(words, start) for _, _, start, decode in compiled]
            except (DecodeError, IndexError, ValueError, struct.error):
                pass  # find out which, tag by tag
            else:
                return self._changed(compiled, values, now, after_gap)
        samples = []
        for tag, _, start, decode in compiled:
            try:
                value = decode(words, start)
            except (DecodeError, IndexError, ValueError, struct.error) as exc:
                samples.append(self._bad(tag, now, after_gap, f"cannot decode: {exc}"))
                continue
            if tag.name in self.tag_errors:
                log.info("%s.%s readable again", self.device_id, tag.name)
                del self.tag_errors[tag.name]
            if self._is_news(tag.name, value, after_gap):
                samples.append(Sample(device_id, tag.name, value, "good", now, after_gap))
        return samples

    def _changed(self, compiled: list[Compiled], values: list[object], now: float,
                 after_gap: bool) -> list[Sample]:
        """Samples for the values that are news: see the module's docstring."""
        device_id, is_news = self.device_id, self._is_news
        return [new_sample(Sample, (device_id, name, value, "good", now, after_gap, None))
                for (_, name, _, _), value in zip(compiled, values, strict=True)
                if is_news(name, value, after_gap)]

    def _is_news(self, name: str, value: object, after_gap: bool) -> bool:
        if name not in self.changes_only:
            return True
        before = self._delivered.get(name, _NOTHING)
        self._delivered[name] = value
        if after_gap or before is _NOTHING:
            return True
        # NaN equals nothing, itself included: a NaN that stays NaN is no change either.
        if before == value or (value != value and before != before):
            self.unchanged += 1
            return False
        return True

    def _compiled(self, request: ReadRequest) -> list[Compiled]:
        """Where each tag sits in the response and how to decode it, worked out once."""
        cached = self._decoders.get(id(request))
        if cached is not None and cached[0] is request:
            return cached[1]
        compiled: list[Compiled] = []
        for tag in request.tags:
            start = tag.location[1] - request.start
            compiled.append((tag, tag.name, start,
                             _bit if request.table in BIT_TABLES else compile_decoder(tag)))
        self._decoders[id(request)] = (request, compiled)
        return compiled

    async def _split(self, request: ReadRequest, after_gap: bool) -> list[Sample]:
        tags = list(request.tags)
        halves = [plan_reads(tags[: len(tags) // 2], self.device.max_gap),
                  plan_reads(tags[len(tags) // 2:], self.device.max_gap)]
        refined = [*halves[0], *halves[1]]
        if request in self.plan:
            at = self.plan.index(request)
            self.plan[at:at + 1] = refined
        samples: list[Sample] = []
        for sub in refined:
            samples.extend(await self._read(sub, after_gap))
        return samples

    def _bad(self, tag: ModbusTag, now: float, after_gap: bool, why: str) -> Sample:
        if self.tag_errors.get(tag.name) != why:
            log.warning("%s.%s: %s", self.device_id, tag.name, why)  # once per distinct error
            self.tag_errors[tag.name] = why
        self._delivered.pop(tag.name, None)  # the next good value is news
        return Sample(self.device_id, tag.name, None, "bad", now, after_gap)

    async def close(self) -> None:
        if self._holding_bus:
            self._holding_bus = False
            await self.bus.release()


def _bit(bits: Any, at: int) -> object:
    return bool(bits[at])
