"""Sparkplug B payloads: metrics in, protobuf bytes out, and back (for commands).

Where each datatype's value goes is fixed by the specification (chapter 6, "Datatype
Details"): the 8-, 16- and 32-bit integers in the uint32 `int_value`, the 64-bit ones and
DateTime in the uint64 `long_value`. A signed value is stored as its two's complement in
that field, which is what decoders read back (tests/node/sparkplug-codec.cjs, a
different implementation, checks every type and both ends of its range).

A value that does not fit the datatype it was born with is refused here (ValueError):
sending it truncated would be a silent lie, and the uplink answers with a rebirth instead.

UInt32 is never sent. The specification puts it in `int_value`; npm's sparkplug-payload
(1.0.3) writes and reads it in `long_value`, and decodes the specification's form as null
(measured, tests/test_sparkplug_payload.py). UInt64 is read from `long_value` by both, so
an unsigned 32-bit value travels as UInt64. A received UInt32 is read from either field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .schema import Payload

MetricValue = int | float | bool | str | bytes | None


class DataType(IntEnum):
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13  # milliseconds since the epoch, UTC
    TEXT = 14
    UUID = 15
    BYTES = 17


class Quality(IntEnum):
    """The 'Quality' property (chapter 6): sent only when a value is not good."""

    BAD = 0
    GOOD = 192
    STALE = 500


# datatype -> (lowest, highest) for the integer types
_INTEGER_RANGES = {
    DataType.INT8: (-(1 << 7), (1 << 7) - 1), DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1), DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT8: (0, (1 << 8) - 1), DataType.UINT16: (0, (1 << 16) - 1),
    DataType.UINT32: (0, (1 << 32) - 1), DataType.UINT64: (0, (1 << 64) - 1),
    DataType.DATETIME: (0, (1 << 64) - 1),
}
_IN_INT_VALUE = frozenset({DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8,
                           DataType.UINT16, DataType.UINT32})
_TEXTS = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a payload. A birth names it and gives its alias; data gives the alias
    alone (the specification forbids the name there)."""

    alias: int
    datatype: DataType
    value: MetricValue
    timestamp_ms: int
    name: str | None = None  # births only
    historical: bool = False
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class ReceivedMetric:
    name: str | None
    alias: int | None
    datatype: int | None
    value: MetricValue


@dataclass(frozen=True, slots=True)
class ReceivedPayload:
    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[ReceivedMetric, ...]


def fits(datatype: DataType, value: MetricValue) -> bool:
    """Can `value` travel as `datatype` without being changed? (None always can: is_null.)"""
    if datatype is DataType.UINT32:
        return False  # never sent: see the module's docstring
    if value is None:
        return True
    if datatype is DataType.BOOLEAN:
        return type(value) is bool
    if datatype in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[datatype]
        return type(value) is int and low <= value <= high
    if datatype is DataType.DOUBLE:
        # An int past 2**53 would be rounded on the way into a double.
        return type(value) is float or (type(value) is int and abs(value) <= 2**53)
    if datatype is DataType.FLOAT:
        return type(value) is float and (not math.isfinite(value) or abs(value) <= FLOAT32_MAX)
    if datatype in _TEXTS:
        return type(value) is str
    return datatype is DataType.BYTES and type(value) is bytes


def encode(timestamp_ms: int, metrics: Iterable[Metric], seq: int | None) -> bytes:
    """A payload; `seq` None only for an NDEATH (the specification leaves it out there)."""
    payload = Payload(timestamp=timestamp_ms)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        _fill(payload.metrics.add(), metric)
    data: bytes = payload.SerializeToString()
    return data


def _fill(target: Any, metric: Metric) -> None:
    if not fits(metric.datatype, metric.value):
        raise ValueError(f"{metric.value!r} does not fit Sparkplug {metric.datatype.name}")
    if metric.name is not None:
        target.name = metric.name
    target.alias = metric.alias
    target.timestamp = metric.timestamp_ms
    target.datatype = metric.datatype
    if metric.historical:
        target.is_historical = True
    if metric.quality is not Quality.GOOD:
        properties = target.properties
        properties.keys.append("Quality")
        properties.values.add(type=DataType.INT32, int_value=int(metric.quality))
    value, datatype = metric.value, metric.datatype
    if value is None:
        target.is_null = True
    elif datatype in _IN_INT_VALUE:  # UInt32 never gets here (fits)
        target.int_value = int(value) & 0xFFFF_FFFF
    elif datatype in _INTEGER_RANGES:
        target.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    elif datatype is DataType.FLOAT:
        target.float_value = value
    elif datatype is DataType.DOUBLE:
        target.double_value = float(value)
    elif datatype is DataType.BOOLEAN:
        target.boolean_value = value
    elif datatype in _TEXTS:
        target.string_value = value
    else:
        target.bytes_value = value


def decode(raw: bytes) -> ReceivedPayload:
    """A received payload (an NCMD). Raises ValueError for bytes that are not one."""
    payload = Payload()
    try:
        payload.ParseFromString(raw)
    except Exception as exc:  # protobuf's DecodeError, whose module differs by backend
        raise ValueError(f"not a Sparkplug B payload: {exc}") from None
    metrics = tuple(ReceivedMetric(
        name=m.name if m.HasField("name") else None,
        alias=m.alias if m.HasField("alias") else None,
        datatype=m.datatype if m.HasField("datatype") else None,
        value=None if m.is_null else _value(m)) for m in payload.metrics)
    return ReceivedPayload(payload.timestamp if payload.HasField("timestamp") else None,
                           payload.seq if payload.HasField("seq") else None, metrics)


def _value(metric: Any) -> MetricValue:
    which = metric.WhichOneof("value")
    if which is None:
        return None
    value: MetricValue = getattr(metric, which)
    signed_bits = _SIGNED_BITS.get(metric.datatype)
    if signed_bits is not None and isinstance(value, int):
        # The low bits, sign-extended: right whether the sender wrote the two's complement
        # in 32 bits (as floorlink does) or only in the type's own width.
        value &= (1 << signed_bits) - 1
        if value >= 1 << (signed_bits - 1):
            value -= 1 << signed_bits
    return value
