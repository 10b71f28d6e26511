"""`floorlink probe`: read every tag of one device once, for commissioning.

For Modbus it prints the request plan, then per tag the raw registers, the decoded value,
and the value under all four byte/word orders, so the engineer can see at a glance which
order the PLC uses (238.0 V, not 11313223.24 V). For OPC UA it prints each node's value,
quality and source timestamp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from drivers.modbus.decode import DecodeError, decode_registers
from drivers.modbus.device import ModbusDriver, describe_exception
from drivers.modbus.plan import BIT_TABLES
from drivers.runner import DriverFactory

from .errors import DriverError
from .events import format_time
from .settings.models import Config, ModbusTag, OpcUaDevice, TagBase

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
EX_UNAVAILABLE = 69


async def probe(config: Config, device_id: str, out: Callable[[str], None] = print) -> int:
    device = config.device(device_id)
    driver = DriverFactory()(device)
    try:
        await driver.open()
        if isinstance(device, OpcUaDevice):
            return await _probe_opcua(driver, device, out)
        assert isinstance(driver, ModbusDriver)
        return await _probe_modbus(driver, out)
    except DriverError as exc:
        out(f"{device_id}: {exc}")
        return EX_UNAVAILABLE
    finally:
        await driver.close()


async def _probe_modbus(driver: ModbusDriver, out: Callable[[str], None]) -> int:
    device = driver.device
    where = getattr(device, "port", None) if device.protocol == "modbus_rtu" else \
        f"{getattr(device, 'host', '')}:{getattr(device, 'port', '')}"
    out(f"{device.id}: {device.protocol} {where}, unit {device.unit}: "
        f"{len(device.tags)} tags in {len(driver.plan)} read{'s' if len(driver.plan) != 1 else ''}")
    out("plan:")
    for request in driver.plan:
        unit = "bits" if request.table in BIT_TABLES else "registers"
        out(f"  {request.table} {request.start}..{request.start + request.count - 1} "
            f"({request.count} {unit}): {', '.join(t.name for t in request.tags)}")
    out("")
    w = _name_width(device.tags)
    out(f"{'tag':<{w}} {'address':<22} {'type':<8} {'raw':<22} value")
    failures = 0
    for request in list(driver.plan):
        response = await driver.read_raw(request)
        for tag in request.tags:
            address = f"{request.table} {tag.location[1]}"
            if response.isError():
                failures += 1
                out(f"{tag.name:<{w}} {address:<22} {tag.type:<8} {'-':<22} "
                    f"{describe_exception(getattr(response, 'exception_code', None))}")
                continue
            offset = tag.location[1] - request.start
            if request.table in BIT_TABLES:
                out(f"{tag.name:<{w}} {address:<22} {tag.type:<8} "
                    f"{int(response.bits[offset]):<22} {bool(response.bits[offset])}")
                continue
            words = list(response.registers[offset:offset + tag.width])
            raw = " ".join(f"{w:04x}" for w in words)
            out(f"{tag.name:<{w}} {address:<22} {tag.type:<8} {raw:<22} "
                f"{_decoded(words, tag)}{_all_orders(words, tag)}")
    return 0 if not failures else 1


def _decoded(words: list[int], tag: ModbusTag) -> str:
    try:
        return repr(decode_registers(words, tag))
    except DecodeError as exc:
        return f"cannot decode: {exc}"


def _all_orders(words: list[int], tag: ModbusTag) -> str:
    if tag.width < 2 or tag.type in ("string", "bool"):
        return ""
    shown = []
    for order in ORDERS:
        variant = tag.model_copy(update={"order": order})
        mark = "*" if order == tag.order else ""
        shown.append(f"{order}{mark} {_short(decode_registers(words, variant))}")
    return "   [" + " | ".join(shown) + "]"


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


async def _probe_opcua(driver: object, device: OpcUaDevice, out: Callable[[str], None]) -> int:
    out(f"{device.id}: opcua {device.endpoint}: {len(device.tags)} tags")
    batches = driver.batches()  # type: ignore[attr-defined]
    seen: dict[str, object] = {}
    try:
        async with asyncio.timeout(max(5.0, device.timeout * 2)):
            while len(seen) < len(device.tags):
                for sample in await anext(batches):
                    seen[sample.tag] = sample
    except TimeoutError:
        pass
    w = _name_width(device.tags)
    where = {tag.name: tag.node or f"path {tag.path}" for tag in device.tags}
    nw = max(44, *(len(text) for text in where.values()))
    out(f"{'tag':<{w}} {'node':<{nw}} {'quality':<9} {'source time':<25} value")
    for tag in device.tags:
        sample = seen.get(tag.name)
        if sample is None:
            out(f"{tag.name:<{w}} {where[tag.name]:<{nw}} no value received")
            continue
        out(f"{tag.name:<{w}} {where[tag.name]:<{nw}} "
            f"{sample.quality:<9} {format_time(sample.source_time):<25} "  # type: ignore[attr-defined]
            f"{_shown(sample.value)}")  # type: ignore[attr-defined]
    return 0 if len(seen) == len(device.tags) else 1


def _name_width(tags: Sequence[TagBase]) -> int:
    """Columns stay aligned however long the tag names are."""
    return max(16, *(len(tag.name) for tag in tags))


def _shown(value: object, limit: int = 80) -> str:
    """A value on one line of the table: long strings end in an ellipsis."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
