"""Modbus RTU on real serial lines (socat ptys), RTU over TCP, and failing reads split."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from serial_line import SerialLine
from test_drivers import Sink, stop

from agent.settings.models import ModbusRtuDevice, ModbusRtuOverTcpDevice, ModbusTcpDevice
from drivers.runner import DeviceHealth, DriverFactory, run_device

TAGS = [{"name": "state", "register": 40001},
        {"name": "count", "register": 40002, "type": "uint32"}]


def sim_device(unit: int, count: int = 32) -> Any:
    from pymodbus.simulator import DataType, SimData, SimDevice

    return SimDevice(id=unit, simdata=[SimData(address=0, count=count, values=unit * 100,
                                               datatype=DataType.REGISTERS)])


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[SerialLine]:
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer

    serial_line = SerialLine(tmp_path)
    server = ModbusSerialServer([sim_device(1), sim_device(2), sim_device(3)],
                                framer=FramerType.RTU, port=serial_line.units_end,
                                baudrate=115200)
    await server.serve_forever(background=True)
    yield serial_line
    await server.shutdown()
    serial_line.stop()


def rtu_device(line: SerialLine, unit: int) -> ModbusRtuDevice:
    return ModbusRtuDevice.model_validate({
        "id": f"unit{unit}", "protocol": "modbus_rtu", "port": line.agent_end,
        "baudrate": 115200, "parity": "N",  # a pty refuses parity settings
        "unit": unit, "poll_interval": 0.1, "timeout": 0.3,
        "frame_gap": 0.002, "tags": TAGS})


async def test_a_dead_unit_costs_only_its_own_slot_on_a_shared_line(
        line: SerialLine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    factory = DriverFactory()
    sinks = {unit: Sink() for unit in (1, 2, 3)}
    healths = {unit: DeviceHealth(f"unit{unit}", "modbus_rtu") for unit in (1, 2, 3)}
    drivers = {unit: factory(rtu_device(line, unit)) for unit in (1, 2, 3)}
    assert len({id(d.bus) for d in drivers.values()}) == 1  # type: ignore[attr-defined]
    tasks = [asyncio.create_task(run_device(drivers[u], sinks[u], healths[u], max_backoff=1.0))
             for u in (1, 2, 3)]
    try:
        try:
            await sinks[1].wait_for(lambda: all(len(s.batches) >= 3 for s in sinks.values()))
        except TimeoutError:
            raise AssertionError([(h.state, h.last_error, len(sinks[u].batches))
                                  for u, h in healths.items()]) from None
        assert sinks[2].latest()["state"].value == 200
        assert sinks[3].latest()["count"].value == (300 << 16) + 300
        line.silent.add(3)  # unit 3 drops off the line
        await sinks[1].wait_for(lambda: healths[3].state == "down")
        before = {u: len(sinks[u].batches) for u in (1, 2)}
        await asyncio.sleep(3)
        polls = {u: len(sinks[u].batches) - before[u] for u in (1, 2)}
        # 3 s at 0.1 s: 30 polls each if nothing else used the line. Unit 3 retries (each
        # costing one 0.3 s timeout) with a backoff capped at 1 s: at most ~1 s in 3.
        assert min(polls.values()) >= 15, polls
        assert "did not answer" in str(healths[3].last_error)
        assert healths[1].state == healths[2].state == "up"
        line.silent.clear()  # back on the line
        await sinks[1].wait_for(lambda: healths[3].state == "up", within=10)
        downs = [r for r in caplog.records if "device unit3 down" in r.message]
        assert len(downs) == 1, "down is logged once, not on every retry"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_rtu_over_tcp_reads_through_a_converter() -> None:
    from pymodbus import FramerType
    from pymodbus.server import ModbusTcpServer

    port = free_port()
    server = ModbusTcpServer([sim_device(5)], framer=FramerType.RTU,
                             address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    device = ModbusRtuOverTcpDevice.model_validate({
        "id": "conv", "protocol": "modbus_rtu_over_tcp", "host": "127.0.0.1", "port": port,
        "unit": 5, "poll_interval": 0.1, "tags": TAGS})
    sink, health = Sink(), DeviceHealth("conv", "modbus_rtu_over_tcp")
    task = asyncio.create_task(run_device(DriverFactory()(device), sink, health))
    try:
        await sink.wait_for(lambda: "count" in sink.latest())
        assert sink.latest()["state"].value == 500
    finally:
        await stop(task)
        await server.shutdown()


async def test_an_exception_inside_a_merged_read_isolates_the_bad_address(
        caplog: pytest.LogCaptureFixture) -> None:
    from pymodbus.server import ModbusTcpServer

    port = free_port()
    server = ModbusTcpServer([sim_device(1, count=32)], address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.1, "max_gap": 16,
        "tags": [{"name": "a", "table": "holding_register", "address": 28},
                 {"name": "b", "table": "holding_register", "address": 30},
                 {"name": "ghost", "table": "holding_register", "address": 34},
                 {"name": "c", "table": "holding_register", "address": 31}]})
    driver = DriverFactory()(device)
    assert len(driver.plan) == 1  # type: ignore[attr-defined]  # one merged read, 28..34
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    task = asyncio.create_task(run_device(driver, sink, health))
    try:
        await sink.wait_for(lambda: len(sink.batches) >= 4)
        latest = sink.latest()
        assert {t: latest[t].quality for t in ("a", "b", "c", "ghost")} == {
            "a": "good", "b": "good", "c": "good", "ghost": "bad"}
        assert latest["a"].value == 100
        warnings = [r.message for r in caplog.records if "plc.ghost" in r.message]
        assert len(warnings) == 1
        assert "illegal data address" in warnings[0]
        assert "holding_register 34" in warnings[0]
        # The refined plan is kept: the failing merged read is not repeated every poll.
        assert len(driver.plan) >= 2  # type: ignore[attr-defined]
        assert health.state == "up"
    finally:
        await stop(task)
        await server.shutdown()


async def test_serial_settings_the_port_refuses_give_a_clear_device_error(
        line: SerialLine) -> None:
    device = rtu_device(line, 1).model_copy(update={"parity": "E"})  # a pty refuses parity
    sink, health = Sink(), DeviceHealth("unit1", "modbus_rtu")
    task = asyncio.create_task(run_device(DriverFactory()(device), sink, health))
    try:
        await sink.wait_for(lambda: health.state == "down")
        assert "check baudrate, parity and stopbits" in str(health.last_error)
        assert not task.done(), "the device task keeps retrying; it did not crash"
    finally:
        await stop(task)
