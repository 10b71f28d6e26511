"""The Modbus driver against modbus-serial, a Modbus TCP stack nobody here wrote (the
other Modbus tests use pymodbus servers, the library floorlink's client is built on, and
a hand-written liar in plc_peers.py). Every register type and word order the config
offers, the four tables, an address the PLC does not have, and hostile floats."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator

import pytest
from node_servers import NodeModbusServer
from test_drivers import Sink, stop

from agent.settings.models import ModbusTcpDevice
from drivers.runner import DeviceHealth, make_driver, run_device


def words(fmt: str, value: float | int) -> list[int]:
    """A value as big-endian 16-bit words (ABCD)."""
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


@pytest.fixture
async def plc() -> AsyncIterator[NodeModbusServer]:
    server = await NodeModbusServer().start()
    yield server
    await server.stop()


async def test_every_type_table_and_order_from_modbus_serial(plc: NodeModbusServer) -> None:
    await plc.write("holding", 0, [3, 0xFFFD, *words("I", 65538), *reversed(words("f", 238.0)),
                                   *words("q", -(2**40)), *words("d", 12.5)])
    await plc.write("holding", 14, [int.from_bytes(b"WO", "big"), int.from_bytes(b"-1", "big"),
                                    int.from_bytes(b"23", "big"), 0, 0b1000])
    await plc.write("input", 0, [42])
    await plc.write("coil", 5, [True])
    await plc.write("discrete", 7, [True])
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": plc.port,
        "poll_interval": 0.1, "timeout": 0.5,
        "tags": [{"name": "state", "register": 40001},
                 {"name": "small", "register": 40002, "type": "int16"},
                 {"name": "good", "register": 40003, "type": "uint32"},
                 {"name": "volts", "register": 40005, "type": "float32", "order": "CDAB"},
                 {"name": "big", "register": 40007, "type": "int64"},
                 {"name": "speed", "register": 40011, "type": "float64"},
                 {"name": "order", "register": 40015, "type": "string", "length": 4},
                 {"name": "flag", "register": 40019, "type": "bool", "bit": 3},
                 {"name": "level", "table": "input_register", "address": 0},
                 {"name": "run", "table": "coil", "address": 5, "type": "bool"},
                 {"name": "door", "table": "discrete_input", "address": 7, "type": "bool"},
                 {"name": "missing", "table": "holding_register", "address": 250}]})
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        await sink.wait_for(lambda: {"missing", "door"} <= set(sink.latest()))
        latest = sink.latest()
        assert {name: s.value for name, s in latest.items()} == {
            "state": 3, "small": -3, "good": 65538, "volts": 238.0, "big": -(2**40),
            "speed": 12.5, "order": "WO-123", "flag": True, "level": 42, "run": True,
            "door": True, "missing": None}
        assert latest["missing"].quality == "bad"  # exception 2, named on the tag
        assert all(s.quality == "good" for n, s in latest.items() if n != "missing")
        assert "illegal data address" in str(health.tag_errors.get("missing", "")).lower()
        assert health.state == "up"

        await plc.write("holding", 2, words("I", 2**32 - 1))
        await plc.write("coil", 5, [False])
        await sink.wait_for(lambda: sink.latest()["good"].value == 2**32 - 1
                            and sink.latest()["run"].value is False)
    finally:
        await stop(task)


async def test_hostile_floats_from_modbus_serial_are_delivered_as_what_they_are(
        plc: NodeModbusServer) -> None:
    """NaN, infinities and 3.4e38 decode as such; derivation then refuses the non-finite
    ones (test_drivers: null with quality bad), never a number made up."""
    await plc.write("holding", 0, [*words("f", math.nan), *words("f", math.inf),
                                   *words("f", -math.inf), *words("f", 3.4e38),
                                   *words("d", 1e300)])
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": plc.port,
        "poll_interval": 0.1, "timeout": 0.5,
        "tags": [{"name": "nan", "register": 40001, "type": "float32"},
                 {"name": "inf", "register": 40003, "type": "float32"},
                 {"name": "ninf", "register": 40005, "type": "float32"},
                 {"name": "max", "register": 40007, "type": "float32"},
                 {"name": "huge", "register": 40009, "type": "float64"}]})
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        await sink.wait_for(lambda: len(sink.latest()) == 5)
        latest = sink.latest()
        assert math.isnan(latest["nan"].value)
        assert (latest["inf"].value, latest["ninf"].value) == (math.inf, -math.inf)
        assert latest["max"].value == pytest.approx(3.4e38, rel=1e-6)
        assert latest["huge"].value == 1e300
        assert health.state == "up"
    finally:
        await stop(task)
