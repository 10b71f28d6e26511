"""The Sparkplug uplink against a real Mosquitto, read by npm's sparkplug-payload.

Births on connect, data by alias, device deaths and births from device.status events, a
rebirth on a host's NCMD, the NDEATH as the will when the connection is cut (a proxy
aborts it, as a dead agent's socket would end), a new bdSeq for the new session, and the
values held meanwhile sent after the births, flagged historical.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker
from sparkplug_peer import Host, NodeCodec, bd_seq, metric
from test_mqtt_reconnect import until
from test_mqtt_resend_order import StallingProxy

from agent.derive.state import (
    DEVICE_KEY,
    AssetState,
    DeviceState,
    OpenDowntime,
    TelemetryMemory,
)
from agent.errors import ConfigError
from agent.events import Event, Lane, new_event_id
from agent.settings import load_config_text
from agent.uplinks.sparkplug.uplink import SparkplugNode
from buffer import Outbox, StoredEvent

GROUP, NODE = "Plant A", "edge-1"
CONFIG = """
site: plant
agent: {{id: edge-1}}
devices:
  - id: press-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {{name: state, register: 40001}}
      - {{name: temp, register: 40002, type: int16, publish: on_change}}
  - id: oven-plc
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    tags:
      - {{name: zone1, node: "ns=2;s=Zone1", publish: on_change}}
assets:
  - {{id: press-1, state: {{tag: press-plc.state, map: {{1: running}}}}}}
uplinks:
  - {{id: scada, type: sparkplug, group_id: "{group}", port: {port}, reconnect_max: 1s{extra}}}
"""


def event(kind: str, subject: str, data: dict[str, Any], at: float = 1_764_000_000.0,
          ) -> Event:
    return Event(new_event_id(), kind, f"floorlink://plant/edge-1/{subject}", subject, at,
                 Lane.TELEMETRY, 1, 1, data)


def temp_event(value: int, at: float = 1_764_000_000.0) -> Event:
    return event("telemetry", "press-plc", {"tag": "press-plc.temp", "device": "press-plc",
                                            "name": "temp", "value": value,
                                            "quality": "good"}, at)


class Buffer:
    """A real buffer: events are committed, then taken back with their positions, as the
    forwarder takes them."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def commit(self, *events: Event, states: dict[str, str] | None = None,
                     ) -> list[StoredEvent]:
        await self.outbox.commit(list(events), states or {})
        ids = {e.id for e in events}
        stored = await self.outbox.fetch(int(Lane.TELEMETRY), 0, 1_000_000)
        return [s for s in stored if s.id in ids]

    async def stored(self, kind: str, subject: str, data: dict[str, Any],
                     at: float = 1_764_000_000.0) -> StoredEvent:
        [one] = await self.commit(event(kind, subject, data, at))
        return one

    async def temp(self, value: int, at: float = 1_764_000_000.0) -> StoredEvent:
        [one] = await self.commit(temp_event(value, at))
        return one


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[Buffer]:
    outbox = await Outbox.open(tmp_path / "buffer.db", ["scada"])
    yield Buffer(outbox)
    await outbox.close()


@pytest.fixture
async def host(broker: Broker, node_decoder: NodeCodec,
               node_encoder: NodeCodec) -> AsyncIterator[Host]:
    watcher = Host(broker.port, node_decoder, node_encoder, GROUP, NODE)
    await asyncio.sleep(0.3)  # subscribed before anything is born
    yield watcher
    watcher.stop()


def node_for(tmp_path: Path, port: int, buffer: Buffer, extra: str = "",
             servers: list[int] | None = None) -> SparkplugNode:
    text = CONFIG.format(group=GROUP, port=port, extra=extra)
    if servers:  # a cluster: the servers list instead of the one port
        listed = ", ".join(f"{{host: 127.0.0.1, port: {p}}}" for p in servers)
        text = text.replace(f"port: {port},", f"servers: [{listed}],")
    config = load_config_text(text, "c.yaml", tmp_path)
    return SparkplugNode(config.uplinks[0], config, buffer.outbox)  # type: ignore[arg-type]


def seqs(host: Host) -> list[int]:
    return [int(m["seq"]) for _, m in host.messages() if "seq" in m]


async def test_births_data_device_status_and_a_clean_death(
        tmp_path: Path, broker: Broker, host: Host, buffer: Buffer) -> None:
    node = node_for(tmp_path, broker.port, buffer)
    await node.start()
    try:
        await until(lambda: len(host.raw) >= 3, 10)  # NBIRTH, two DBIRTHs
        [(topic, nbirth)] = host.messages("NBIRTH")
        assert topic == f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
        names = {m["name"]: m for m in nbirth["metrics"]}
        assert names["bdSeq"]["value"] == "0"
        assert names["Node Control/Rebirth"]["value"] is False
        assert "press-1/State" in names
        assert [t for t, _ in host.messages("DBIRTH")] == [
            f"spBv1.0/{GROUP}/DBIRTH/{NODE}/press-plc", f"spBv1.0/{GROUP}/DBIRTH/{NODE}/oven-plc"]
        alias = {m["name"]: m["alias"] for _, b in host.messages("DBIRTH") for m in b["metrics"]}

        await asyncio.wait_for(node.submit(await buffer.temp(41)), 5)
        await asyncio.wait_for(node.submit(await buffer.stored(
            "machine.state_changed", "press-1", {"state": "running", "code": 1,
                                                 "previous_state": None,
                                                 "previous_duration_s": None})), 5)
        shift = await buffer.stored("shift.completed", "press-1", {})
        await asyncio.wait_for(node.submit(shift), 5)
        await until(lambda: len(host.messages("NDATA")) == 1, 5)
        [(_, ddata)] = host.messages("DDATA")
        [metric] = ddata["metrics"]
        assert metric == {"alias": alias["temp"], "value": 41, "type": "Int16",
                          "timestamp": "1764000000000"}
        [(_, ndata)] = host.messages("NDATA")
        assert {m["alias"] for m in ndata["metrics"]} == {
            names["press-1/State"]["alias"], names["press-1/State Code"]["alias"]}

        offline = {"device": "press-plc", "status": "offline",
                   "last_sample_at": "2025-11-24T16:00:00.000Z", "offline_s": None}
        went = await buffer.stored("device.status", "press-plc", offline)
        await asyncio.wait_for(node.submit(went), 5)
        await asyncio.wait_for(node.submit(await buffer.stored("device.status", "press-plc", {
            **offline, "status": "online", "offline_s": 5.0})), 5)
        await until(lambda: len(host.messages("DBIRTH")) == 3, 5)
        assert [t.rsplit("/", 1)[1] for t, _ in host.messages("DDEATH")] == ["press-plc"]
        reborn = host.messages("DBIRTH")[-1][1]
        assert [(m["name"], m["value"]) for m in reborn["metrics"]] == [("temp", 41)]
    finally:
        await node.close()
    await until(lambda: len(host.messages("NDEATH")) == 1, 5)
    [(_, death)] = host.messages("NDEATH")
    assert "seq" not in death
    assert death["metrics"][0]["value"] == "0"
    # seq: NBIRTH 0, then one more for every message of the node, NDEATH none
    assert seqs(host) == list(range(len(seqs(host))))


async def test_a_host_asks_for_a_rebirth(tmp_path: Path, broker: Broker, host: Host,
                                         buffer: Buffer) -> None:
    node = node_for(tmp_path, broker.port, buffer)
    await node.start()
    try:
        await until(lambda: len(host.messages("DBIRTH")) == 2, 10)
        await asyncio.wait_for(node.submit(await buffer.temp(7)), 5)
        host.command({"timestamp": 1, "metrics": [
            {"name": "Node Control/Reboot", "type": "Boolean", "value": True}]})
        host.command({"timestamp": 2, "metrics": [
            {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]})
        await until(lambda: len(host.messages("NBIRTH")) == 2, 5)
        await until(lambda: len(host.messages("DBIRTH")) == 4, 5)
        births = [int(b["seq"]) for _, b in host.messages("NBIRTH")]
        assert births == [0, 0]
        bd_seqs = [next(m["value"] for m in b["metrics"] if m["name"] == "bdSeq")
                   for _, b in host.messages("NBIRTH")]
        assert bd_seqs == ["0", "0"]  # the same session
        press = host.messages("DBIRTH")[2][1]
        assert press["metrics"][0]["value"] == 7  # the current value, in the birth
        assert node.health.details["births"] == 2

        # A value of a new type where the config left the datatype open: born again.
        def zone1(value: Any) -> dict[str, Any]:
            return {"tag": "oven-plc.zone1", "device": "oven-plc", "name": "zone1",
                    "value": value, "quality": "good"}

        await asyncio.wait_for(node.submit(await buffer.stored(
            "telemetry", "oven-plc", zone1(21.5))), 5)
        await asyncio.wait_for(node.submit(await buffer.stored(
            "telemetry", "oven-plc", zone1("warm"))), 5)
        await until(lambda: len(host.messages("NBIRTH")) == 3, 5)
        assert node.health.details["rebirths"] == 1
        assert node.health.details["births"] == 3
        oven = [d for t, d in host.messages("DBIRTH") if t.endswith("/oven-plc")][-1]
        assert (metric(oven, "zone1")["type"], metric(oven, "zone1")["value"]) == (
            "String", "warm")
    finally:
        await node.close()


async def test_a_cut_connection_is_the_ndeath_and_values_held_go_out_historical(
        tmp_path: Path, broker: Broker, host: Host, buffer: Buffer) -> None:
    proxy = StallingProxy(broker.port)
    await proxy.start()
    node = node_for(tmp_path, proxy.port, buffer)
    await node.start()
    try:
        await until(lambda: len(host.messages("DBIRTH")) == 2, 10)
        proxy.swallowing = True  # nothing more gets through; then the socket dies
        await asyncio.sleep(0.2)
        proxy.cut()
        proxy.swallowing = False
        await until(lambda: len(host.messages("NDEATH")) == 1, 10)  # the broker's will
        await until(lambda: not node.health.connected, 5)
        [(_, will)] = host.messages("NDEATH")
        assert will["metrics"][0]["value"] == "0"
        held = [node.submit(await buffer.temp(n, 1_764_000_000.0 + n)) for n in (1, 2, 3)]
        await asyncio.wait_for(asyncio.gather(*held), 15)  # after the new session's births
        await until(lambda: len(host.messages("NBIRTH")) == 2, 5)
        nbirths = host.messages("NBIRTH")
        assert [next(m["value"] for m in b["metrics"] if m["name"] == "bdSeq")
                for _, b in nbirths] == ["0", "1"]
        await until(lambda: len(host.messages("DDATA")) == 3, 5)
        values = [(m["value"], m.get("isHistorical")) for _, d in host.messages("DDATA")
                  for m in d["metrics"]]
        assert values == [(1, True), (2, True), (3, True)]
        await asyncio.wait_for(node.submit(await buffer.temp(4)), 5)
        await until(lambda: len(host.messages("DDATA")) == 4, 5)
        assert "isHistorical" not in host.messages("DDATA")[-1][1]["metrics"][0]
    finally:
        await node.close()
        await proxy.close()


@pytest.mark.parametrize(("group", "message"), [
    ("a/b", "cannot contain '/'"), ("", "cannot be empty"), ("x+", r"cannot contain '\+'")])
def test_a_group_id_the_namespace_cannot_hold_is_refused(tmp_path: Path, group: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(CONFIG.format(group=group, port=1883, extra=""), "c.yaml", tmp_path)



def committed_states() -> dict[str, str]:
    """What a pipeline would have committed: press-1 down in an open downtime, a value of
    press-plc's temp published, oven-plc offline."""
    press = AssetState(machine_state="down", state_code=3, state_since=1_764_000_100.0,
                       work_order="WO-7", totals_work_order="WO-7",
                       totals={"good": 120, "scrap": 3})
    press.downtime = OpenDowntime("dt-1", 1_764_000_100.0, False, 102, "Die jam", "WO-7")
    temp = TelemetryMemory(seen=True, value=55, published=True, published_value=55,
                           published_at=1_764_000_090.0)
    return {"press-1": press.to_json(),
            f"{DEVICE_KEY}press-plc": DeviceState({"press-plc.temp": temp}).to_json(),
            f"{DEVICE_KEY}oven-plc": DeviceState(offline_since=1_764_000_050.0).to_json()}


async def test_births_carry_the_committed_values_and_older_events_follow_as_history(
        tmp_path: Path, broker: Broker, host: Host, buffer: Buffer) -> None:
    """An agent restarting with a backlog: the births say what is current (the buffer's
    committed states), the events not yet sent follow flagged historical, the next live.
    And bdSeq goes on from the last session's, across the restart."""
    backlog = await buffer.commit(temp_event(50, 1_764_000_080.0),
                                  temp_event(55, 1_764_000_090.0), states=committed_states())
    node = node_for(tmp_path, broker.port, buffer)
    await node.start()
    try:
        await until(lambda: len(host.messages("DBIRTH")) == 1, 10)
        [(_, nbirth)] = host.messages("NBIRTH")
        assert bd_seq(nbirth) == 0
        assert metric(nbirth, "press-1/State")["value"] == "down"
        assert metric(nbirth, "press-1/State")["timestamp"] == "1764000100000"
        assert metric(nbirth, "press-1/Downtime/Open")["value"] is True
        assert metric(nbirth, "press-1/Downtime/Reason")["value"] == "Die jam"
        assert metric(nbirth, "press-1/Work Order")["value"] == "WO-7"
        assert metric(nbirth, "press-1/Good Total")["value"] == "120"
        assert metric(nbirth, "press-1/Hold/Open")["value"] is False
        # oven-plc was offline: no DBIRTH until it is back
        [(topic, dbirth)] = host.messages("DBIRTH")
        assert topic.endswith("/press-plc")
        assert metric(dbirth, "temp")["value"] == 55
        assert metric(dbirth, "temp")["timestamp"] == "1764000090000"
        assert node.health.details["offline_devices"] == ["oven-plc"]

        for old in backlog:
            await asyncio.wait_for(node.submit(old), 5)
        await asyncio.wait_for(node.submit(await buffer.temp(60, 1_764_000_200.0)), 5)
        await until(lambda: len(host.messages("DDATA")) == 3, 5)
        values = [(m["value"], m.get("isHistorical", False))
                  for _, d in host.messages("DDATA") for m in d["metrics"]]
        assert values == [(50, True), (55, True), (60, False)]
    finally:
        await node.close()
    await until(lambda: len(host.messages("NDEATH")) == 1, 5)

    again = node_for(tmp_path, broker.port, buffer)  # the agent's next start
    await again.start()
    try:
        await until(lambda: len(host.messages("NBIRTH")) == 2, 10)
        assert [bd_seq(b) for _, b in host.messages("NBIRTH")] == [0, 1]
    finally:
        await again.close()
    await until(lambda: len(host.messages("NDEATH")) == 2, 5)
    assert [bd_seq(d) for _, d in host.messages("NDEATH")] == [0, 1]


async def test_waits_for_the_primary_host_and_replays_its_outage_as_history(
        tmp_path: Path, broker: Broker, host: Host, buffer: Buffer) -> None:
    host.state("scada-host", False, 1_000)  # retained: the host is not there yet
    node = node_for(tmp_path, broker.port, buffer, extra=", primary_host_id: scada-host")
    await node.start()
    try:
        await until(lambda: node.health.connected, 10)
        held = node.submit(await buffer.temp(1, 1_764_000_001.0))
        await asyncio.sleep(1.0)
        assert host.messages("NBIRTH") == []
        assert not held.done()
        assert "waiting for the primary host scada-host" in str(node.health.last_error)

        host.state("scada-host", True, 2_000)
        await asyncio.wait_for(held, 10)
        await until(lambda: len(host.messages("DDATA")) == 1, 5)
        [(_, data)] = host.messages("DDATA")
        assert data["metrics"][0]["isHistorical"] is True  # committed before the births
        assert node.health.details["primary_host_online"] is True

        host.state("scada-host", False, 1_500)  # older than the last: a late copy, ignored
        await asyncio.sleep(0.5)
        assert host.messages("NDEATH") == []
        assert node.health.connected

        host.state("scada-host", False, 3_000)
        await until(lambda: len(host.messages("NDEATH")) == 1, 5)  # published by the node
        assert bd_seq(host.messages("NDEATH")[0][1]) == 0
        await until(lambda: node.health.disconnects == 1, 5)
        await until(lambda: node.health.connected, 10)  # back on the one broker, waiting
        await asyncio.sleep(0.5)
        assert len(host.messages("NBIRTH")) == 1
        assert node.health.disconnects == 1  # waiting there, not leaving again
        assert "waiting for the primary host" in str(node.health.last_error)

        # The host's outage: values go on being committed, and wait.
        during = [node.submit(await buffer.temp(n, 1_764_000_000.0 + n)) for n in range(10, 15)]
        await asyncio.sleep(0.3)
        assert not any(f.done() for f in during)

        host.state("scada-host", True, 4_000)
        await until(lambda: len(host.messages("NBIRTH")) == 2, 10)
        assert bd_seq(host.messages("NBIRTH")[1][1]) == 1  # a new session
        await asyncio.wait_for(asyncio.gather(*during), 10)
        await asyncio.wait_for(node.submit(await buffer.temp(20, 1_764_000_020.0)), 5)
        await until(lambda: len(host.messages("DDATA")) == 7, 5)
        replayed = [(m["value"], m.get("isHistorical", False), m["timestamp"])
                    for _, d in host.messages("DDATA")[1:] for m in d["metrics"]]
        assert replayed == [(n, n < 20, str((1_764_000_000 + n) * 1000))
                            for n in (10, 11, 12, 13, 14, 20)]  # in order, then live
    finally:
        await node.close()


async def test_walks_to_the_broker_where_the_primary_host_is_online(
        tmp_path: Path, broker: Broker, host: Host, buffer: Buffer,
        node_decoder: NodeCodec, node_encoder: NodeCodec) -> None:
    other_dir = tmp_path / "broker-b"
    other_dir.mkdir()
    other = Broker(other_dir)
    other.start()
    watcher = Host(other.port, node_decoder, node_encoder, GROUP, NODE, "host-b")
    try:
        host.state("scada-host", False, 1_000)  # the host lost broker A
        watcher.state("scada-host", True, 1_000)  # and is on broker B
        node = node_for(tmp_path, broker.port, buffer, extra=", primary_host_id: scada-host",
                        servers=[broker.port, other.port])
        await node.start()
        try:
            await until(lambda: len(watcher.messages("NBIRTH")) == 1, 15)
            assert host.messages("NBIRTH") == []
            assert host.messages("NDEATH") == []
            assert node.health.target == f"127.0.0.1:{other.port}"

            host.state("scada-host", True, 2_000)  # the host is back on A
            watcher.state("scada-host", False, 2_000)  # and lost B
            await until(lambda: len(host.messages("NBIRTH")) == 1, 15)
            # The node ended its session on B (its NDEATH pairs with B's NBIRTH); every
            # CONNECT, A's first one included, took the next bdSeq.
            [(_, death)] = watcher.messages("NDEATH")
            born_on_b = bd_seq(watcher.messages("NBIRTH")[0][1])
            assert bd_seq(death) == born_on_b
            assert bd_seq(host.messages("NBIRTH")[0][1]) == born_on_b + 1
            assert node.health.target == f"127.0.0.1:{broker.port}"
        finally:
            await node.close()
    finally:
        watcher.stop()
        other.stop()
