"""The Edge Node's metrics from a config: names, aliases, datatypes; and the topic ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import load_config_text
from agent.settings.sparkplug import id_problem
from agent.uplinks.sparkplug import catalogue, topics
from agent.uplinks.sparkplug.payload import DataType

CONFIG = """
site: plant
agent: {id: edge-1}
devices:
  - id: press-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: state, register: 40001}
      - {name: temp, register: 40002, type: int16, publish: on_change}
      - {name: speed, register: 40003, type: uint32, publish: every 1s}
      - {name: pressure, register: 40005, type: uint16, scale: 0.1, publish: on_change}
      - {name: mode, register: 40006, enum: {1: auto, 2: manual}, publish: on_change}
      - {name: door, register: 40007, bit: 3, type: bool, publish: on_change}
      - {name: flow, register: 40008, type: float32, publish: on_change}
  - id: oven-plc
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    tags:
      - {name: zone1, node: "ns=2;s=Zone1", publish: on_change}
      - {name: recipe, node: "ns=2;s=Recipe"}
assets:
  - {id: press-1, state: {tag: press-plc.state, map: {1: running}}}
  - {id: oven-1, state: {tag: oven-plc.zone1, map: {1: running}}}
"""


def test_node_devices_aliases_and_datatypes(tmp_path: Path) -> None:
    built = catalogue.build(load_config_text(CONFIG, "c.yaml", tmp_path))
    names = [m.name for m in built.node]
    assert names[:2] == ["bdSeq", "Node Control/Rebirth"]
    assert names[2:4] == ["press-1/State", "press-1/State Code"]
    assert "oven-1/Hold/Open" in names
    assert len(names) == 2 + 2 * len(catalogue.ASSET_METRICS)
    # only tags that publish telemetry; in config order
    assert [m.name for m in built.devices["press-plc"]] == [
        "temp", "speed", "pressure", "mode", "door", "flow"]
    assert [m.name for m in built.devices["oven-plc"]] == ["zone1"]
    datatypes = {m.name: m.datatype for m in built.devices["press-plc"]}
    assert datatypes == {"temp": DataType.INT16, "speed": DataType.UINT64,
                         "pressure": DataType.DOUBLE, "mode": DataType.STRING,
                         "door": DataType.BOOLEAN, "flow": DataType.FLOAT}
    assert built.devices["oven-plc"][0].datatype is None  # OPC UA: the value says
    every = [*built.node, *built.devices["press-plc"], *built.devices["oven-plc"]]
    assert [m.alias for m in every] == list(range(1, len(every) + 1))  # unique on the node
    assert built.by_ref()["press-plc.flow"].name == "flow"


def test_the_same_config_gives_the_same_aliases(tmp_path: Path) -> None:
    first = catalogue.build(load_config_text(CONFIG, "c.yaml", tmp_path))
    again = catalogue.build(load_config_text(CONFIG, "c.yaml", tmp_path))
    assert first == again


@pytest.mark.parametrize(("value", "datatype"), [
    (True, DataType.BOOLEAN), (7, DataType.INT64), (2**63, DataType.UINT64),
    (1.5, DataType.DOUBLE), ("x", DataType.STRING), (b"\x00", DataType.BYTES),
])
def test_a_datatype_from_a_value(value: object, datatype: DataType) -> None:
    assert catalogue.value_datatype(value) is datatype  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "problem"), [
    ("", "empty"), ("a/b", "'/'"), ("line+1", "'+'"), ("#", "'#'")])
def test_sparkplug_ids(value: str, problem: str) -> None:
    assert problem in str(id_problem(value))


def test_topics() -> None:
    assert topics.node_topic("Plant A", "NBIRTH", "edge-1") == "spBv1.0/Plant A/NBIRTH/edge-1"
    assert topics.device_topic("g", "DDATA", "e", "press-plc") == "spBv1.0/g/DDATA/e/press-plc"
    assert topics.state_topic("scada") == "spBv1.0/STATE/scada"
    assert id_problem("Plant A") is None


RELOADED = """
site: plant
devices:
  - id: plc
    protocol: modbus_tcp
    host: 127.0.0.1
    poll_interval: {poll}
    tags:
      - {{name: temp, register: 40002, publish: on_change{extra}}}
uplinks:
  - {{id: scada, type: sparkplug, group_id: g, host: 127.0.0.1}}
  - {{id: events, type: mqtt, host: 127.0.0.1}}
"""


@pytest.mark.parametrize(("poll", "extra", "restarted"), [
    ("1s", ", type: int16", ["scada"]),  # UInt16 -> Int16
    ("1s", ", scale: 0.1", ["scada"]),  # -> Double
    ("1s", ', enum: {1: "on"}', ["scada"]),  # -> String
    ("2s", "", []),  # the device restarts; its metrics are the same
])
def test_a_reload_restarts_the_sparkplug_uplink_when_its_metrics_change(
        tmp_path: Path, poll: str, extra: str, restarted: list[str]) -> None:
    from agent.reload import plan

    running = load_config_text(RELOADED.format(poll="1s", extra=""), "c.yaml", tmp_path)
    loaded = load_config_text(RELOADED.format(poll=poll, extra=extra), "c.yaml", tmp_path)
    steps, _ = plan(running, loaded)
    assert steps.devices_start == ["plc"]
    assert steps.uplinks_restart == restarted
    assert steps.restart_needed == []
