"""The Edge Node's births, data and deaths, as npm's sparkplug-payload decodes them."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import pytest
from sparkplug_peer import NodeCodec
from test_sparkplug_catalogue import CONFIG

from agent.settings import load_config_text
from agent.uplinks.sparkplug import catalogue, metrics
from agent.uplinks.sparkplug.metrics import Update
from agent.uplinks.sparkplug.payload import Quality, decode
from agent.uplinks.sparkplug.session import EdgeNode, Message, RebirthNeeded

NOW = 1_764_000_000_000


@pytest.fixture
def edge(tmp_path: Path) -> EdgeNode:
    config = load_config_text(CONFIG, "c.yaml", tmp_path)
    return EdgeNode("Plant A", "edge-1", catalogue.build(config), bd_seq=7)


def read(codec: NodeCodec, message: Message) -> dict[str, Any]:
    return codec.decode(message.payload)


def test_births_carry_every_metric_with_alias_datatype_and_current_value(
        edge: EdgeNode, node_decoder: NodeCodec) -> None:
    edge.remember([Update("press-plc.temp", -12, NOW - 500),
                   Update("press-1/State", "running", NOW - 900),
                   Update("press-plc.flow", 2.5, NOW - 100, Quality.STALE)])
    nbirth, press, oven = edge.births(NOW, ["press-plc", "oven-plc"])
    assert nbirth.topic == "spBv1.0/Plant A/NBIRTH/edge-1"
    assert press.topic == "spBv1.0/Plant A/DBIRTH/edge-1/press-plc"
    node = read(node_decoder, nbirth)
    assert node["seq"] == "0"
    assert node["timestamp"] == str(NOW)
    by_name = {m["name"]: m for m in node["metrics"]}
    assert by_name["bdSeq"]["value"] == "7"
    assert by_name["bdSeq"]["type"] == "UInt64"
    assert by_name["Node Control/Rebirth"]["value"] is False
    assert by_name["press-1/State"]["value"] == "running"
    assert by_name["press-1/State"]["timestamp"] == str(NOW - 900)
    assert by_name["oven-1/Hold/Open"]["value"] is None  # nothing known yet: null
    assert all("alias" in m and "type" in m for m in node["metrics"])
    device = read(node_decoder, press)
    assert device["seq"] == "1"
    tags = {m["name"]: m for m in device["metrics"]}
    assert set(tags) == {"temp", "speed", "pressure", "mode", "door", "flow"}
    assert (tags["temp"]["type"], tags["temp"]["value"]) == ("Int16", -12)
    assert tags["flow"]["properties"] == {"Quality": {"type": "Int32", "value": 500}}
    assert read(node_decoder, oven)["seq"] == "2"
    aliases = [m["alias"] for m in [*node["metrics"], *device["metrics"]]]
    assert len(aliases) == len(set(aliases))


def test_data_goes_by_alias_alone_and_seq_wraps_after_255(
        edge: EdgeNode, node_decoder: NodeCodec) -> None:
    edge.births(NOW, ["press-plc"])
    alias = {m.ref: str(m.alias) for m in [*edge.catalogue.node,
                                           *edge.catalogue.devices["press-plc"]]}
    seqs = []
    for n in range(300):
        messages = edge.data([Update("press-plc.temp", n % 100, NOW + n)], NOW + n)
        seqs += [int(read(node_decoder, m)["seq"]) for m in messages]
    assert seqs == [(2 + n) % 256 for n in range(300)]  # NBIRTH 0, DBIRTH 1
    ddata, ndata = edge.data([Update("press-plc.speed", 4_000_000_000, NOW),
                              Update("press-1/Downtime/Open", True, NOW),
                              Update("nobody.knows", 1, NOW)], NOW, historical=True)
    device, node = read(node_decoder, ddata), read(node_decoder, ndata)
    assert ddata.topic == "spBv1.0/Plant A/DDATA/edge-1/press-plc"
    assert ndata.topic == "spBv1.0/Plant A/NDATA/edge-1"
    [speed] = device["metrics"]
    assert "name" not in speed
    assert speed["alias"] == alias["press-plc.speed"]
    assert (speed["type"], speed["value"], speed["isHistorical"]) == (
        "UInt64", "4000000000", True)
    assert node["metrics"][0]["alias"] == alias["press-1/Downtime/Open"]


def test_the_death_is_the_bdseq_without_a_seq(edge: EdgeNode, node_decoder: NodeCodec) -> None:
    death = edge.death(NOW)
    assert death.topic == "spBv1.0/Plant A/NDEATH/edge-1"
    decoded = read(node_decoder, death)
    assert "seq" not in decoded
    assert decoded["metrics"][0]["name"] == "bdSeq"
    assert decoded["metrics"][0]["value"] == "7"


def test_a_device_death_and_birth_continue_the_seq(edge: EdgeNode,
                                                   node_decoder: NodeCodec) -> None:
    edge.births(NOW, ["press-plc"])
    death = edge.device_death("press-plc", NOW)
    assert death.topic == "spBv1.0/Plant A/DDEATH/edge-1/press-plc"
    assert read(node_decoder, death)["seq"] == "2"
    assert read(node_decoder, edge.device_birth("press-plc", NOW))["seq"] == "3"


def test_an_open_datatype_is_born_again_when_a_value_does_not_fit(
        edge: EdgeNode, node_decoder: NodeCodec) -> None:
    edge.births(NOW, ["oven-plc"])  # zone1 (OPC UA) has no value yet: a null Double
    [sent] = edge.data([Update("oven-plc.zone1", 180, NOW)], NOW)
    assert read(node_decoder, sent)["metrics"][0]["value"] == 180
    with pytest.raises(RebirthNeeded, match="zone1"):
        edge.data([Update("oven-plc.zone1", "heating", NOW + 1)], NOW + 1)
    _, oven = edge.births(NOW + 2, ["oven-plc"])
    [zone] = read(node_decoder, oven)["metrics"]
    assert (zone["type"], zone["value"]) == ("String", "heating")


def test_a_fixed_datatype_sends_what_does_not_fit_as_bad_null(
        edge: EdgeNode, node_decoder: NodeCodec) -> None:
    edge.births(NOW, ["press-plc"])
    messages = edge.data([Update("press-plc.temp", 70_000, NOW),  # no Int16
                          Update("press-plc.mode", 9, NOW)], NOW)  # an enum code with no text
    temp, mode = read(node_decoder, messages[0])["metrics"]
    assert temp["value"] is None
    assert temp["properties"]["Quality"]["value"] == 0
    assert (mode["type"], mode["value"]) == ("String", "9")


def test_events_become_metric_updates() -> None:
    at = "2026-12-03T10:00:00.250Z"
    batch = metrics.updates("telemetry.batch", "press-plc", NOW, {"values": [
        {"tag": "press-plc.temp", "value": 5, "quality": "good", "at": at},
        {"tag": "press-plc.flow", "value": None, "quality": "bad", "at": at}]})
    assert [(u.ref, u.value, u.quality) for u in batch] == [
        ("press-plc.temp", 5, Quality.GOOD), ("press-plc.flow", None, Quality.BAD)]
    assert batch[0].at_ms == calendar.timegm((2026, 12, 3, 10, 0, 0)) * 1000 + 250
    hold = metrics.updates("quality.hold_raised", "press-1", NOW, {
        "lot": "L7", "reason": "burr", "work_order": "WO-1"})
    assert {u.ref: u.value for u in hold} == {
        "press-1/Hold/Open": True, "press-1/Hold/Reason": "burr", "press-1/Lot": "L7",
        "press-1/Work Order": "WO-1"}
    confirmed = metrics.updates("production.confirmed", "press-1", NOW, {
        "work_order": "WO-1", "good": 3, "good_total": 40, "scrap_total": 2})
    assert {u.ref: u.value for u in confirmed} == {
        "press-1/Work Order": "WO-1", "press-1/Good Total": 40, "press-1/Scrap Total": 2}
    assert metrics.updates("shift.completed", "press-1", NOW, {"oee": 0.5}) == []


def test_live_data_carries_only_changes_and_history_all_of_it(edge: EdgeNode) -> None:
    edge.births(NOW, ["press-plc"])
    assert len(edge.data([Update("press-plc.temp", 41, NOW)], NOW)) == 1
    assert edge.data([Update("press-plc.temp", 41, NOW + 1000)], NOW + 1000) == []
    assert len(edge.data([Update("press-plc.temp", 41, NOW + 2000, Quality.STALE)],
                         NOW + 2000)) == 1  # the quality changed
    assert len(edge.data([Update("press-1/Downtime/Open", True, NOW)], NOW)) == 1
    [ndata] = edge.data([Update("press-1/Downtime/Open", True, NOW),  # the same: left out
                         Update("press-1/Downtime/Reason", "Die jam", NOW)], NOW)
    assert [m.alias for m in decode(ndata.payload).metrics] == [
        edge.alias("press-1/Downtime/Reason")]
    assert edge.data([Update("press-1/State Code", 1, NOW)], NOW) != []
    assert edge.data([Update("press-1/State Code", True, NOW)], NOW) != []  # True is not 1
    # History is what it was, repeated values too: nothing is left out of it.
    assert len(edge.data([Update("press-plc.temp", 41, NOW - 5000)], NOW, historical=True)) == 1
