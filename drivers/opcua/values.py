"""An OPC UA DataValue as a floorlink Sample: plain value, quality, PLC time.

A Bad status never becomes a value (no zero, no stale number): the sample carries
None with quality "bad", and derivation treats it as "not known".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from ..base import Quality, Sample, new_sample


def quality_of(status: Any) -> Quality:
    value = int(getattr(status, "value", 0) or 0)
    severity = value >> 30  # the top two bits: 0 good, 1 uncertain, 2 bad
    return "good" if severity == 0 else "uncertain" if severity == 1 else "bad"


def plain(value: Any) -> object:
    """Types derivation and JSON understand: enumerations arrive as their integer."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return _utc(value).timestamp()
    if hasattr(value, "Text"):  # LocalizedText
        return value.Text
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [plain(item) for item in value]
    if hasattr(value, "value") and isinstance(value.value, int):  # a Python enum
        return int(value.value)
    return str(value)


def to_sample(device: str, tag: str, data_value: Any, after_gap: bool) -> Sample:
    quality = quality_of(data_value.StatusCode)
    variant = data_value.Value
    value = None if quality == "bad" or variant is None else plain(variant.Value)
    stamp = data_value.SourceTimestamp or data_value.ServerTimestamp
    when = _utc(stamp).timestamp() if isinstance(stamp, datetime) else time.time()
    # The Variant carries the node's integer type with every value: a counter's wrap
    # is known without reading DataType attributes, and stays right if the PLC's
    # program changes the type between sessions.
    wraps_at = WRAPS.get(getattr(getattr(variant, "VariantType", None), "name", ""))
    return new_sample(Sample, (device, tag, value, quality, when, after_gap, wraps_at))


# OPC UA integer types (VariantType names) and where a counter of that type wraps.
WRAPS = {"Byte": 1 << 8, "SByte": 1 << 8, "UInt16": 1 << 16, "Int16": 1 << 16,
         "UInt32": 1 << 32, "Int32": 1 << 32, "UInt64": 1 << 64, "Int64": 1 << 64}


def _utc(moment: datetime) -> datetime:
    """OPC UA times are UTC; a naive datetime must not be read as local time."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
