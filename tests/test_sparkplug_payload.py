"""Sparkplug B payloads as another implementation reads them.

floorlink encodes with Google's protobuf (upb); npm's sparkplug-payload (protobufjs)
decodes. Every datatype floorlink sends, at both ends of its range, with the flags and
the Quality property; what sparkplug-payload encodes (a host's Rebirth command), read
back; and the values that must be refused rather than sent changed.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from sparkplug_peer import NodeCodec

from agent.uplinks.sparkplug.payload import (
    FLOAT32_MAX,
    DataType,
    Metric,
    Quality,
    decode,
    encode,
    fits,
)
from agent.uplinks.sparkplug.schema import Payload

NOW_MS = 1_764_000_000_123


EDGES: list[tuple[DataType, Any, Any]] = [  # datatype, value sent, as the decoder says it
    (DataType.INT8, -128, -128), (DataType.INT8, 127, 127), (DataType.INT8, -1, -1),
    (DataType.INT16, -32768, -32768), (DataType.INT16, 32767, 32767),
    (DataType.INT32, -(2**31), -(2**31)), (DataType.INT32, 2**31 - 1, 2**31 - 1),
    (DataType.INT64, -(2**63), str(-(2**63))), (DataType.INT64, 2**63 - 1, str(2**63 - 1)),
    (DataType.INT64, -1, "-1"),
    (DataType.UINT8, 0, 0), (DataType.UINT8, 255, 255),
    (DataType.UINT16, 65535, 65535),
    (DataType.UINT64, 0, "0"), (DataType.UINT64, 2**64 - 1, str(2**64 - 1)),
    (DataType.UINT64, 4_294_967_295, "4294967295"),  # a PLC's UInt32, sent as UInt64
    (DataType.DATETIME, NOW_MS, str(NOW_MS)),
    (DataType.FLOAT, 1.5, 1.5), (DataType.FLOAT, -0.0, "-0"),
    (DataType.FLOAT, FLOAT32_MAX, FLOAT32_MAX),
    (DataType.FLOAT, math.inf, "Infinity"), (DataType.FLOAT, math.nan, "NaN"),
    (DataType.DOUBLE, 0.1, 0.1), (DataType.DOUBLE, 1e300, 1e300),
    (DataType.DOUBLE, -math.inf, "-Infinity"), (DataType.DOUBLE, 7, 7),
    (DataType.BOOLEAN, True, True), (DataType.BOOLEAN, False, False),
    (DataType.STRING, "", ""), (DataType.STRING, "Pressé 3 — ü\u00a0✓", "Pressé 3 — ü\u00a0✓"),
    (DataType.TEXT, "line 1\nline 2", "line 1\nline 2"),
]


@pytest.mark.parametrize(("datatype", "value", "expected"), EDGES,
                         ids=[f"{d.name}={v!r}" for d, v, _ in EDGES])
def test_every_datatype_at_its_edges_reads_back_the_same(
        node_decoder: NodeCodec, datatype: DataType, value: Any, expected: Any) -> None:
    raw = encode(NOW_MS, [Metric(7, datatype, value, NOW_MS - 5, name="Press 1/Value")], 3)
    decoded = node_decoder.decode(raw)
    assert decoded["timestamp"] == str(NOW_MS)
    assert decoded["seq"] == "3"
    [metric] = decoded["metrics"]
    assert metric["name"] == "Press 1/Value"
    assert metric["alias"] == "7"
    assert metric["type"] == _TYPE_NAMES[datatype]
    assert metric["timestamp"] == str(NOW_MS - 5)
    if datatype is DataType.FLOAT and isinstance(expected, float):
        assert metric["value"] == pytest.approx(expected, rel=1e-7)  # 32 bits
    else:
        assert metric["value"] == expected
    assert decode(raw).metrics[0].value == value or (
        isinstance(value, float) and math.isnan(value))


_TYPE_NAMES = {DataType.INT8: "Int8", DataType.INT16: "Int16", DataType.INT32: "Int32",
               DataType.INT64: "Int64", DataType.UINT8: "UInt8", DataType.UINT16: "UInt16",
               DataType.UINT64: "UInt64", DataType.DATETIME: "DateTime",
               DataType.FLOAT: "Float", DataType.DOUBLE: "Double",
               DataType.BOOLEAN: "Boolean", DataType.STRING: "String", DataType.TEXT: "Text"}


def test_data_by_alias_null_historical_and_bad_quality(node_decoder: NodeCodec) -> None:
    raw = encode(NOW_MS, [
        Metric(1, DataType.DOUBLE, 20.5, NOW_MS - 60_000, historical=True),
        Metric(2, DataType.DOUBLE, None, NOW_MS, quality=Quality.BAD),
        Metric(3, DataType.INT64, 41, NOW_MS, quality=Quality.STALE),
    ], 255)
    decoded = node_decoder.decode(raw)
    assert decoded["seq"] == "255"
    first, second, third = decoded["metrics"]
    assert "name" not in first
    assert first["alias"] == "1"
    assert first["isHistorical"] is True
    assert first["value"] == 20.5
    assert second["value"] is None
    assert "isHistorical" not in second
    assert second["properties"] == {"Quality": {"type": "Int32", "value": 0}}
    assert third["properties"] == {"Quality": {"type": "Int32", "value": 500}}


def test_a_huge_string_and_a_thousand_metrics_survive(node_decoder: NodeCodec) -> None:
    text = "x" * 1_000_000
    metrics = [Metric(i, DataType.INT64, i * 1_000_003, NOW_MS) for i in range(1, 1001)]
    raw = encode(NOW_MS, [*metrics, Metric(5000, DataType.STRING, text, NOW_MS)], 0)
    decoded = node_decoder.decode(raw)
    assert [m["value"] for m in decoded["metrics"][:1000]] == [
        str(i * 1_000_003) for i in range(1, 1001)]
    assert decoded["metrics"][-1]["value"] == text


def test_an_ndeath_has_no_seq(node_decoder: NodeCodec) -> None:
    raw = encode(NOW_MS, [Metric(0, DataType.UINT64, 4, NOW_MS, name="bdSeq")], None)
    decoded = node_decoder.decode(raw)
    assert "seq" not in decoded
    assert decoded["metrics"][0]["value"] == "4"


@pytest.mark.parametrize(("datatype", "value"), [
    (DataType.INT8, 128), (DataType.INT8, -129), (DataType.UINT16, 65536),
    (DataType.UINT16, -1), (DataType.INT64, 2**63), (DataType.UINT64, -1),
    (DataType.UINT64, 2**64), (DataType.INT32, True), (DataType.INT32, 1.0),
    (DataType.BOOLEAN, 1), (DataType.STRING, 5), (DataType.FLOAT, 1e300),
    (DataType.FLOAT, 1), (DataType.DOUBLE, 2**60), (DataType.DOUBLE, "1.5"),
    (DataType.UINT32, 7),
])
def test_a_value_that_does_not_fit_is_refused_not_changed(datatype: DataType,
                                                          value: Any) -> None:
    assert not fits(datatype, value)
    with pytest.raises(ValueError, match=datatype.name):
        encode(NOW_MS, [Metric(1, datatype, value, NOW_MS)], 1)


def test_uint32_is_where_the_two_readings_disagree(node_decoder: NodeCodec) -> None:
    """Why floorlink sends no UInt32 (payload.py): in the specification's int_value,
    sparkplug-payload 1.0.3 reads it as null; it reads UInt32 from long_value."""
    as_specified = Payload(timestamp=NOW_MS, seq=1)
    as_specified.metrics.add(alias=1, timestamp=NOW_MS, datatype=DataType.UINT32,
                             int_value=4_000_000_000)
    [metric] = node_decoder.decode(as_specified.SerializeToString())["metrics"]
    assert metric["type"] == "UInt32"
    assert metric["value"] is None
    # floorlink reads either form, should a host send one.
    as_npm_writes = Payload(timestamp=NOW_MS, seq=1)
    as_npm_writes.metrics.add(alias=1, timestamp=NOW_MS, datatype=DataType.UINT32,
                              long_value=4_000_000_000)
    for payload in (as_specified, as_npm_writes):
        assert decode(payload.SerializeToString()).metrics[0].value == 4_000_000_000


def test_a_rebirth_command_from_another_implementation(node_encoder: NodeCodec) -> None:
    raw = node_encoder.encode({"timestamp": NOW_MS, "metrics": [
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": True}]})
    received = decode(raw)
    assert received.timestamp_ms == NOW_MS
    [metric] = received.metrics
    assert (metric.name, metric.datatype, metric.value) == (
        "Node Control/Rebirth", DataType.BOOLEAN, True)


def test_negative_integers_written_by_another_implementation(node_encoder: NodeCodec) -> None:
    raw = node_encoder.encode({"timestamp": NOW_MS, "metrics": [
        {"name": "a", "type": "Int8", "value": -5}, {"name": "b", "type": "Int16", "value": -300},
        {"name": "c", "type": "Int32", "value": -70000}]})
    assert [m.value for m in decode(raw).metrics] == [-5, -300, -70000]


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x0a\x05abc", b"\x12\x80"])
def test_bytes_that_are_not_a_payload_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        decode(raw)
