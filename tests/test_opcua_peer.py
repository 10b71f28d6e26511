"""The OPC UA driver against node-opcua, an OPC UA stack nobody here wrote (the other
OPC UA tests use asyncua servers, the library floorlink's client is built on). Every
common type, status codes, the PLC's time, and hostile values: NaN, Infinity, a
1,000,000-character string, bytes, a variable whose type changes under the tag."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from node_servers import NS, NodeOpcUaServer, node
from test_drivers import stop
from test_opcua import device, run


@pytest.fixture
async def peer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeOpcUaServer]:
    server = await NodeOpcUaServer(tmp_path_factory.getbasetemp() / "opcua-pki").start()
    yield server
    await server.stop()


async def test_every_type_and_status_from_node_opcua(peer: NodeOpcUaServer) -> None:
    names = ["Good", "State", "Speed", "Temp", "Running", "Order", "Since", "Small", "Big",
             "Bytes"]
    tags = [{"name": n.lower(), "node": node(n)} for n in names]
    tags.append({"name": "polled", "path": "Press1/Good", "mode": "poll",
                 "poll_interval": "0.2s"})
    task, sink, health, _ = await run(device(peer.endpoint, tags, namespace=NS))
    try:
        await sink.wait_for(lambda: len(sink.latest()) == len(tags), 30)
        latest = sink.latest()
        assert {n: latest[n.lower()].value for n in names} == {
            "Good": 100, "State": 1, "Speed": 12.5, "Temp": 21.5, "Running": True,
            "Order": "WO-1", "Since": datetime(2026, 11, 23, 6, 0, tzinfo=UTC).timestamp(),
            "Small": -3, "Big": 2**40, "Bytes": "deadbeef"}
        assert latest["polled"].value == 100
        assert latest["good"].wraps_at == 2**32  # the Variant's UInt32 says where it wraps
        assert latest["small"].wraps_at == 2**16
        assert all(s.quality == "good" for s in latest.values())

        await peer.write("Good", "UInt32", 101)
        await sink.wait_for(lambda: sink.latest()["good"].value == 101
                            and sink.latest()["polled"].value == 101)
        assert abs(sink.latest()["good"].source_time - datetime.now(UTC).timestamp()) < 5
        # A sensor fault: Bad status. Never a number, never zero.
        await peer.write("Speed", "Double", 0.0, "BadSensorFailure")
        await sink.wait_for(lambda: sink.latest()["speed"].quality == "bad")
        assert sink.latest()["speed"].value is None
        await peer.write("Speed", "Double", 7.0)
        await sink.wait_for(lambda: sink.latest()["speed"].value == 7.0)
        await peer.write("Good", "UInt32", 102, "UncertainLastUsableValue")
        await sink.wait_for(lambda: sink.latest()["good"].quality == "uncertain")
        assert sink.latest()["good"].value == 102
        assert health.state == "up"
    finally:
        await stop(task)


async def test_hostile_values_from_node_opcua_are_bounded_and_marked(
        peer: NodeOpcUaServer) -> None:
    tags = [{"name": "nan", "node": node("Nan")}, {"name": "inf", "node": node("Inf")},
            {"name": "huge", "node": node("Huge")}, {"name": "shifty", "node": node("Shifty")}]
    task, sink, health, _ = await run(device(peer.endpoint, tags, namespace=NS))
    try:
        await sink.wait_for(lambda: len(sink.latest()) == len(tags), 30)
        latest = sink.latest()
        # Non-finite numbers reach derivation as what they are; it sends them as null
        # with quality bad ("not finite"), never as a number (test_derive covers that).
        assert isinstance(latest["nan"].value, float)
        assert math.isnan(latest["nan"].value)
        assert latest["inf"].value == math.inf
        huge = latest["huge"].value
        assert isinstance(huge, str)
        assert len(huge) <= 256 + 8  # cut to max_string (256), marked
        assert huge.endswith("[cut]")
        assert latest["shifty"].value == 5

        await peer.write("Shifty", "String", "now text")
        await sink.wait_for(lambda: sink.latest()["shifty"].value == "now text")
        await peer.write("Shifty", "Double", 2.5)
        await sink.wait_for(lambda: sink.latest()["shifty"].value == 2.5)
        await peer.write("Huge", "String", "y" * 2_000_000)
        await sink.wait_for(lambda: str(sink.latest()["huge"].value).startswith("y"))
        assert len(str(sink.latest()["huge"].value)) <= 256 + 8
        assert health.state == "up"
    finally:
        await stop(task)
