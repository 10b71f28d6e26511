"""Drivers against real servers on loopback: values, exceptions, outages and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import free_port

from agent.settings.models import ModbusTcpDevice, OpcUaDevice
from agent.shared import Sample
from drivers.runner import DeviceHealth, make_driver, run_device


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []
        self.changed = asyncio.Event()

    async def __call__(self, batch: list[Sample]) -> None:
        self.batches.append(batch)
        self.changed.set()

    def latest(self) -> dict[str, Sample]:
        return {s.tag: s for batch in self.batches for s in batch}

    @property
    def samples(self) -> list[Sample]:
        return [s for batch in self.batches for s in batch]

    async def wait_for(self, predicate: Any, within: float = 15) -> None:
        """Wait until `predicate()` holds; re-checked on every batch and every second
        (device health changes without a batch)."""
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 1.0)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel a device task and wait until it has unwound."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def start_modbus(port: int, words: list[int]) -> Any:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    server = ModbusTcpServer(
        SimDevice(id=1, simdata=[SimData(address=0, count=32, values=0,
                                         datatype=DataType.REGISTERS)]),
        address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    await server.async_setValues(1, 16, 0, words)
    return server


async def test_modbus_values_exception_response_outage_and_recovery(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.1, "timeout": 0.5,
        "tags": [{"name": "state", "register": 40001},
                 {"name": "good", "register": 40002, "type": "uint32"},
                 {"name": "volts", "register": 40004, "type": "float32", "order": "CDAB"},
                 {"name": "missing", "register": 40201}]})  # beyond the server's 32 registers
    server = await start_modbus(port, [3, 0x0001, 0x0002, 0x0000, 0x436E])
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        await sink.wait_for(lambda: "missing" in sink.latest())
        latest = sink.latest()
        assert (latest["state"].value, latest["good"].value, latest["volts"].value) == (
            3, 65538, 238.0)
        assert latest["state"].after_gap  # first poll after connecting
        assert latest["missing"].quality == "bad"
        assert latest["missing"].value is None
        # Drivers build samples through tuple.__new__ (new_sample): every field is there.
        assert all(type(s) is Sample and s == Sample(*s) for s in sink.samples)
        await sink.wait_for(lambda: len(sink.batches) >= 5)
        assert not sink.batches[-1][0].after_gap
        exception_logs = [r for r in caplog.records if "illegal data address" in r.message]
        assert len(exception_logs) == 1, "a failing tag is logged once, not on every poll"
        assert "plc.missing" in exception_logs[0].message
        assert "holding_register 200" in exception_logs[0].message
        assert health.state == "up"

        await server.shutdown()
        await sink.wait_for(lambda: health.state == "down")
        assert health.last_error
        await asyncio.sleep(1.5)  # several failed reconnects
        before = len(sink.batches)
        server = await start_modbus(port, [1, 0, 7, 0, 0])
        await sink.wait_for(lambda: health.state == "up" and len(sink.batches) > before)
        assert sink.batches[before][0].after_gap, "the first sample after a gap says so"
        assert health.reconnects == 1
        downs = [r for r in caplog.records if "device plc down" in r.message]
        recoveries = [r for r in caplog.records if "device plc recovered" in r.message]
        assert (len(downs), len(recoveries)) == (1, 1), "logged once down, once recovered"
    finally:
        await stop(task)
        await server.shutdown()


async def start_opcua(port: int, extra_namespaces: int) -> tuple[Any, Any]:
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/test")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    for n in range(extra_namespaces):  # shifts the index our namespace gets
        await server.register_namespace(f"urn:test:filler:{n}")
    idx = await server.register_namespace("urn:test:press")
    var = await server.nodes.objects.add_variable(ua.NodeId("Press.Count", idx), "Count",
                                                  ua.Variant(41, ua.VariantType.UInt32))
    await server.start()
    return server, var


async def test_opcua_namespace_uri_survives_reordering_and_reconnect() -> None:
    from asyncua import ua

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    port = free_port()
    device = OpcUaDevice.model_validate({
        "id": "ua", "protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/test",
        "timeout": 2, "publishing_interval": 0.05,
        "tags": [{"name": "count", "node": "nsu=urn:test:press;s=Press.Count"}]})
    server, var = await start_opcua(port, extra_namespaces=0)
    sink, health = Sink(), DeviceHealth("ua", "opcua")
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        await sink.wait_for(lambda: sink.latest().get("count") is not None)
        assert sink.latest()["count"].value == 41
        assert sink.latest()["count"].after_gap
        stamp = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
        await var.write_value(ua.DataValue(ua.Variant(42, ua.VariantType.UInt32),
                                           SourceTimestamp=stamp, ServerTimestamp=stamp))
        await sink.wait_for(lambda: sink.latest()["count"].value == 42)
        assert sink.latest()["count"].source_time == stamp.timestamp()  # the PLC's own time
        await server.stop()
        await sink.wait_for(lambda: health.state == "down", within=20)
        # The server comes back with its namespaces in another order.
        server, var = await start_opcua(port, extra_namespaces=3)
        await var.write_value(ua.DataValue(ua.Variant(99, ua.VariantType.UInt32)))
        await sink.wait_for(lambda: health.state == "up"
                            and sink.latest()["count"].value == 99, within=30)
        assert sink.latest()["count"].after_gap
    finally:
        await stop(task)
        await server.stop()


async def test_nan_and_infinity_from_a_plc_reach_receivers_as_null_with_quality_bad() -> None:
    """A float32 register holding NaN or +Infinity, read by the real driver from a real
    server, derived and encoded: every body is strict JSON (Infinity used to go out as
    `Infinity`, which a strict receiver refuses whole; NaN was never published)."""
    import json

    from agent.derive import DeriveContext, apply_device_samples
    from agent.derive.spec import DeviceSpec, TelemetryPolicy
    from agent.derive.state import DeviceState

    port = free_port()
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.1, "timeout": 0.5,
        "tags": [{"name": "nan", "register": 40001, "type": "float32"},
                 {"name": "inf", "register": 40003, "type": "float32"},
                 {"name": "ok", "register": 40005, "type": "float32"}]})
    server = await start_modbus(port, [0x7FC0, 0, 0x7F80, 0, 0x436E, 0])
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        await sink.wait_for(lambda: {"nan", "inf", "ok"} <= set(sink.latest()))
    finally:
        await stop(task)
        await server.shutdown()
    spec = DeviceSpec("plc", {f"plc.{t}": TelemetryPolicy(on_change=True)
                              for t in ("nan", "inf", "ok")})
    _, events = apply_device_samples(spec, DeviceState(), sink.batches[0], 1.0,
                                     DeriveContext(site="s", agent="a", epoch=1))
    published = {}
    for event in events:
        body = json.loads(event.to_json(), parse_constant=lambda token: 1 / 0)  # strict
        published[body["data"]["name"]] = (body["data"]["value"], body["data"]["quality"],
                                           body["data"].get("quality_reason"))
    assert published == {"nan": (None, "bad", "not finite"), "inf": (None, "bad", "not finite"),
                         "ok": (238.0, "good", None)}


async def one_variable_server(port: int, node: str, initial: Any) -> tuple[Any, Any]:
    """An asyncua server with one variable, `nsu=urn:test:press;s=<node>`."""
    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/test")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:test:press")
    var = await server.nodes.objects.add_variable(ua.NodeId(node, idx), node, initial)
    await server.start()
    return server, var


async def test_an_opcua_uint16_counter_wraps_exactly_with_no_modulus_configured() -> None:
    """OPC UA tags have no configured type: the Variant type that comes with every value
    says where the counter wraps (here 65535 -> 0 through a real asyncua server)."""
    from asyncua import ua

    from agent.derive import DeriveContext, apply_samples, apply_tick
    from agent.derive.spec import AssetSpec
    from agent.derive.state import AssetState

    port = free_port()
    server, var = await one_variable_server(port, "Press.Good",
                                            ua.Variant(65533, ua.VariantType.UInt16))
    device = OpcUaDevice.model_validate({
        "id": "ua", "protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/test",
        "timeout": 2, "publishing_interval": 0.05,
        "tags": [{"name": "good", "node": "nsu=urn:test:press;s=Press.Good"}]})
    sink, health = Sink(), DeviceHealth("ua", "opcua")
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        for value in (65533, 65535, 0, 2):
            await var.write_value(ua.DataValue(ua.Variant(value, ua.VariantType.UInt16)))
            await sink.wait_for(lambda v=value: sink.latest().get("good") is not None
                                and sink.latest()["good"].value == v)
    finally:
        await stop(task)
        await server.stop()
    assert {s.wraps_at for s in sink.samples if s.tag == "good"} == {1 << 16}
    spec = AssetSpec(id="press", area=None, line=None, roles={"ua.good": "good"},
                     state_map={}, interval=3600.0)
    ctx = DeriveContext(site="s", agent="a", epoch=1)
    state = AssetState()
    for batch in sink.batches:
        state, _ = apply_samples(spec, state, batch, batch[-1].source_time, ctx)
    _, [confirmed] = apply_tick(spec, state, sink.samples[-1].source_time + 7200, ctx)
    assert (confirmed.data["good"], confirmed.data["estimated"]) == (5, False)


async def test_an_opcua_device_resumes_within_max_backoff_after_a_server_restart() -> None:
    """Measured: 6 to 39 s to resume after a 3 s outage, with the wait doubling to 30 s.
    Now the wait stops at the device's max_backoff (default 10 s; 2 s here)."""
    import time

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    port = free_port()
    device = OpcUaDevice.model_validate({
        "id": "ua", "protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/test",
        "timeout": 2, "publishing_interval": 0.05, "max_backoff": "2s",
        "tags": [{"name": "count", "node": "nsu=urn:test:press;s=Press.Count"}]})
    assert device.max_backoff == 2.0
    assert OpcUaDevice.model_validate({**device.model_dump(exclude={"max_backoff"})}
                                      ).max_backoff == 10.0  # the default, for every protocol
    server, _ = await start_opcua(port, extra_namespaces=0)
    sink, health = Sink(), DeviceHealth("ua", "opcua")
    task = asyncio.create_task(run_device(make_driver(device), sink, health,
                                          device.max_backoff))
    try:
        await sink.wait_for(lambda: health.state == "up")
        await server.stop()
        await sink.wait_for(lambda: health.state == "down", within=20)
        await asyncio.sleep(8)  # long enough for an uncapped wait to grow past 4 s
        server, _ = await start_opcua(port, extra_namespaces=0)
        back = time.monotonic()
        await sink.wait_for(lambda: health.state == "up", within=30)
        assert time.monotonic() - back < 2.0 + 3.0  # max_backoff, and a connect's worth
    finally:
        await stop(task)
        await server.stop()


async def test_a_huge_opcua_string_is_cut_to_max_string_and_warned_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A 10 MB work-order string took the agent from 77 to 350 MB RSS and made an 11 MB
    status page. Strings stop at max_string (256 by default) at the driver."""
    from asyncua import ua

    port = free_port()
    server, var = await one_variable_server(port, "Press.WorkOrder",
                                            ua.Variant("WO-1", ua.VariantType.String))
    device = OpcUaDevice.model_validate({
        "id": "ua", "protocol": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/test",
        "timeout": 2, "publishing_interval": 0.05,
        "tags": [{"name": "wo", "node": "nsu=urn:test:press;s=Press.WorkOrder"}]})
    sink, health = Sink(), DeviceHealth("ua", "opcua")
    task = asyncio.create_task(run_device(make_driver(device), sink, health))
    try:
        await sink.wait_for(lambda: sink.latest().get("wo") is not None)
        for n in range(2):
            huge = f"WO-{n}" + "x" * 4_000_000
            await var.write_value(ua.Variant(huge, ua.VariantType.String))
            await sink.wait_for(lambda n=n: str(sink.latest()["wo"].value).startswith(f"WO-{n}x"))
        value = str(sink.latest()["wo"].value)
        assert len(value) == 256
        assert value.endswith("…[cut]")
        await var.write_value(ua.Variant("WO-2", ua.VariantType.String))
        await sink.wait_for(lambda: sink.latest()["wo"].value == "WO-2")  # short ones untouched
    finally:
        await stop(task)
        await server.stop()
    warnings = [r for r in caplog.records if "cut to 256" in r.getMessage()]
    assert len(warnings) == 1  # once per tag, not per value


async def test_a_device_whose_tags_all_answer_with_an_error_is_degraded_with_an_alarm() -> None:
    """Measured: every tag answered exception 2, and the page said "up", last sample 0 s
    ago, no error, no alarm."""
    from agent.status.board import StatusBoard
    from agent.status.page import render

    port = free_port()
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.1, "timeout": 0.5,
        "tags": [{"name": "state", "register": 40201}, {"name": "good", "register": 40301}]})
    server = await start_modbus(port, [1, 2, 3])
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    board = StatusBoard(site="s", agent="a", alive=True)
    board.devices = [health]
    task = asyncio.create_task(run_device(make_driver(device), sink, health, max_backoff=0.5))
    try:
        await sink.wait_for(lambda: len(health.tag_errors) == 2)
        view = board.snapshot()
        [shown] = view["devices"]
        assert shown["state"] == "degraded"
        assert "illegal data address" in shown["tag_errors"]["state"]
        [alarm] = [a for a in view["alarms"] if a["key"] == "device.plc.degraded"]
        assert "2 tag(s) answer with an error" in alarm["message"]
        assert "holding_register 200" in alarm["message"]
        assert "degraded" in render(view)
        await server.shutdown()
        await sink.wait_for(lambda: health.state == "down")
        assert health.last_error is not None
        assert health.last_error_at is not None  # the page says when
        assert "(at 20" in render(board.snapshot())
        server = await start_modbus(port, [1, 2, 3])
        await sink.wait_for(lambda: health.state == "up")
        assert (health.last_error, health.last_error_at) == (None, None)  # cleared
    finally:
        await stop(task)
        await server.shutdown()


async def test_modbus_delivers_a_tag_no_asset_uses_only_when_it_changes() -> None:
    """Polled every time, delivered when news: a tag no asset uses costs no sample while
    it holds still; an asset's tags go out on every poll; after a reconnect, and after a
    tag went bad, its value goes out again even if it is the same as before. The values
    read but left out still count in the device's samples (the metric)."""
    from drivers.runner import DriverFactory

    port = free_port()
    device = ModbusTcpDevice.model_validate({
        "id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "poll_interval": 0.05, "timeout": 0.5,
        "tags": [{"name": "state", "register": 40001},
                 {"name": "temp", "register": 40002, "type": "float32"},
                 {"name": "speed", "register": 40004}]})
    server = await start_modbus(port, [1, 0x7FC0, 0x0000, 7])  # temp is NaN
    sink, health = Sink(), DeviceHealth("plc", "modbus_tcp")
    driver = DriverFactory(bound=frozenset({"plc.state"}))(device)
    task = asyncio.create_task(run_device(driver, sink, health, max_backoff=0.3))

    def delivered(tag: str) -> list[Sample]:
        return [s for s in sink.samples if s.tag == tag]

    try:
        await sink.wait_for(lambda: len(delivered("state")) >= 10)
        assert len(delivered("speed")) == 1
        assert delivered("speed")[0].after_gap
        assert len(delivered("temp")) == 1, "NaN staying NaN is no change"
        assert all(type(s) is Sample and s == Sample(*s) for s in delivered("speed"))
        assert health.samples >= 3 * len(delivered("state")) - 3  # every read counts

        await server.async_setValues(1, 16, 3, [8])
        await sink.wait_for(lambda: len(delivered("speed")) == 2)
        assert delivered("speed")[-1].value == 8
        assert not delivered("speed")[-1].after_gap
        seen = len(delivered("state"))
        await sink.wait_for(lambda: len(delivered("state")) >= seen + 10)
        assert len(delivered("speed")) == 2

        await server.shutdown()  # a reconnect: everything goes out once more
        await sink.wait_for(lambda: health.state == "down")
        server = await start_modbus(port, [1, 0x7FC0, 0x0000, 8])
        await sink.wait_for(lambda: len(delivered("speed")) == 3)
        assert delivered("speed")[-1].value == 8
        assert delivered("speed")[-1].after_gap
        assert len(delivered("temp")) == 2
    finally:
        await stop(task)
        await server.shutdown()
