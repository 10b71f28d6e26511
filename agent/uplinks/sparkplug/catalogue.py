"""Which metrics the Edge Node has, their aliases and their datatypes, from the config.

The agent is the Edge Node; each PLC device is a Sparkplug device whose metrics are its
tags that publish telemetry (a tag without `publish` has no value to send). What an asset
derives (its state, totals, work order, lot, open downtime and hold) lives on the node,
under the asset's name, because an asset can span devices.

Aliases number every metric of the node, devices included, in config order: unique across
the Edge Node, as the specification requires. The same config gives the same aliases; a
changed config gives a new catalogue, and the uplink announces it with a new birth.

A datatype is decided from the tag where the config says it exactly (a Modbus type with no
scale, offset or enum). Otherwise it is taken from the first value the birth carries, and
a later value that does not fit makes the uplink born again with the wider type.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...settings.models import Config, ModbusTag, OpcUaTag
from .payload import DataType, MetricValue, fits

BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"

# What a Modbus type decodes to, when nothing rescales or renames it. A 32-bit unsigned
# value travels as UInt64 (payload.py: decoders disagree on UInt32).
MODBUS_DATATYPES: dict[str, DataType] = {
    "bool": DataType.BOOLEAN, "int16": DataType.INT16, "uint16": DataType.UINT16,
    "int32": DataType.INT32, "uint32": DataType.UINT64, "int64": DataType.INT64,
    "uint64": DataType.UINT64, "float32": DataType.FLOAT, "float64": DataType.DOUBLE,
    "string": DataType.STRING,
}

# An asset's metrics on the node: (name under the asset, datatype, what feeds it).
ASSET_METRICS: tuple[tuple[str, DataType, str], ...] = (
    ("State", DataType.STRING, "machine.state_changed: state"),
    ("State Code", DataType.INT64, "machine.state_changed: code"),
    ("Work Order", DataType.STRING, "the work order of the asset's last business event"),
    ("Good Total", DataType.INT64, "production.confirmed: good_total"),
    ("Scrap Total", DataType.INT64, "production.confirmed: scrap_total"),
    ("Lot", DataType.STRING, "quality.hold_raised / hold_released: lot"),
    ("Downtime/Open", DataType.BOOLEAN, "downtime.started / downtime.ended"),
    ("Downtime/Reason", DataType.STRING, "downtime.started / classified: reason"),
    ("Hold/Open", DataType.BOOLEAN, "quality.hold_raised / hold_released"),
    ("Hold/Reason", DataType.STRING, "quality.hold_raised: reason"),
)


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    alias: int
    datatype: DataType | None  # None: taken from the first value (see the docstring)
    ref: str  # "<device>.<tag>" for a tag; "<asset>/<name>" or the name on the node


@dataclass(frozen=True)
class Catalogue:
    node: tuple[MetricDef, ...]
    devices: dict[str, tuple[MetricDef, ...]]  # device id -> its metrics, in config order

    def by_ref(self) -> dict[str, MetricDef]:
        return {m.ref: m for m in (*self.node, *(m for ms in self.devices.values() for m in ms))}


def build(config: Config) -> Catalogue:
    alias = 0

    def next_alias() -> int:
        nonlocal alias
        alias += 1
        return alias

    node = [MetricDef(BD_SEQ, next_alias(), DataType.UINT64, BD_SEQ),
            MetricDef(REBIRTH, next_alias(), DataType.BOOLEAN, REBIRTH)]
    for asset in config.assets:
        for name, datatype, _ in ASSET_METRICS:
            node.append(MetricDef(f"{asset.id}/{name}", next_alias(), datatype,
                                  f"{asset.id}/{name}"))
    devices: dict[str, tuple[MetricDef, ...]] = {}
    for device in config.devices:
        devices[device.id] = tuple(
            MetricDef(tag.name, next_alias(), tag_datatype(tag), f"{device.id}.{tag.name}")
            for tag in device.tags if tag.publish is not None)
    return Catalogue(tuple(node), devices)


def tag_datatype(tag: ModbusTag | OpcUaTag) -> DataType | None:
    """The datatype the config fixes for a tag's values, or None if only a value tells."""
    if not isinstance(tag, ModbusTag):
        return None  # OPC UA: the server's Variant says, value by value
    if tag.enum is not None:
        return DataType.STRING  # a code with a configured text is sent as that text
    if tag.bit is not None:
        return DataType.BOOLEAN
    if tag.scale != 1.0 or tag.offset != 0.0:
        return DataType.DOUBLE if tag.type != "string" else DataType.STRING
    return MODBUS_DATATYPES[tag.type]


def value_datatype(value: MetricValue) -> DataType:
    """The datatype for a metric the config left open, from a value it carries."""
    if type(value) is bool:
        return DataType.BOOLEAN
    if type(value) is int:
        return DataType.INT64 if fits(DataType.INT64, value) else DataType.UINT64
    if type(value) is float:
        return DataType.DOUBLE
    if type(value) is bytes:
        return DataType.BYTES
    return DataType.STRING
