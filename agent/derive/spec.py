"""What derivation needs to know, compiled once from the config."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..settings.models import Asset, Config, ModbusDeviceBase, TagBase

# Roles a tag can play for an asset; context roles are applied before edges.
CONTEXT_ROLES = ("reason", "lot", "hold_reason", "hold_quantity")
COUNTER_ROLES = ("good", "scrap")
# The production lot comes after the work order: when both change in one read, the old
# order's closing confirmation carries the lot it was made in, not the next order's.
ROLE_ORDER = (*CONTEXT_ROLES, *COUNTER_ROLES, "work_order", "production_lot", "state", "hold")

# Where a Modbus counter of each type wraps; signed counters wrap at 2**n as well.
_MODBUS_MODULUS = {"uint16": 1 << 16, "int16": 1 << 16, "uint32": 1 << 32, "int32": 1 << 32,
                   "uint64": 1 << 64, "int64": 1 << 64}


@dataclass(frozen=True)
class TelemetryPolicy:
    every: float | None = None  # publish at this interval ...
    on_change: bool = False  # ... or when the value moves past the deadband
    deadband: float | None = None
    deadband_percent: float | None = None
    min_interval: float = 0.0

    @property
    def timed(self) -> bool:
        """Does the passing of time matter (periodic publishing, a change held back)?"""
        return self.every is not None or self.min_interval > 0


def _timed(policies: dict[str, TelemetryPolicy]) -> dict[str, TelemetryPolicy]:
    return {ref: policy for ref, policy in policies.items() if policy.timed}


@dataclass(frozen=True)
class AssetSpec:
    id: str
    area: str | None
    line: str | None
    roles: dict[str, str]  # "<device>.<tag>" -> role
    state_map: dict[int, str]
    down_states: frozenset[str] = frozenset({"down"})
    min_dwell: float = 0.0
    micro_stop: float = 60.0
    micro_stops: str = "summarize"  # summarize | report | ignore
    interval: float = 300.0
    unit: str = "Units"
    parts_per_cycle: int = 1
    shifts: tuple[tuple[int, int], ...] = ()
    timezone: str = "UTC"
    ideal_cycle: float | None = None  # OEE: seconds per cycle at best (agent/shift/)
    ideal_by_work_order: dict[str, float] = field(default_factory=dict)
    reason_texts: dict[int, str] = field(default_factory=dict)
    default_reason: str = "unclassified"
    # What an operator may give a stop at /line: code -> (text, group).
    operator_reasons: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    hold_reason_texts: dict[int, str] = field(default_factory=dict)
    # Where a counter wraps, when known; None = unknown.
    counter_modulus: dict[str, int | None] = field(default_factory=dict)
    on_reset: str = "count_from_zero"  # count_from_zero | estimate | ignore
    max_rate: float | None = None  # parts per second a counter can never exceed; None: learned
    snapshot_interval: float | None = None
    fault_persists: float | None = None
    fault_repeats: int | None = None
    repeat_window: float = 3600.0
    telemetry: dict[str, TelemetryPolicy] = field(default_factory=dict)  # tag ref -> policy
    # Which role's value is the lot being produced ("production_lot", or "lot" when the
    # hold's lot tag is the same tag); None when the asset maps no production lot.
    production_lot_role: str | None = None

    @cached_property
    def timed_telemetry(self) -> dict[str, TelemetryPolicy]:
        """The policies a clock tick must look at; on_change alone needs no tick."""
        return _timed(self.telemetry)

    def counter_tag(self, role: str) -> str | None:
        return next((ref for ref, r in self.roles.items() if r == role), None)


@dataclass(frozen=True)
class DeviceSpec:
    """A device: the telemetry of its tags that no asset uses (maybe none), and its status."""

    id: str
    telemetry: dict[str, TelemetryPolicy]

    @cached_property
    def timed_telemetry(self) -> dict[str, TelemetryPolicy]:
        return _timed(self.telemetry)


def compile_assets(config: Config) -> list[AssetSpec]:
    return [_compile(asset, config) for asset in config.assets]


def bound_tags(config: Config) -> frozenset[str]:
    """Every tag ("device.tag") some asset uses; the others are the devices' own."""
    return frozenset(ref for asset in config.assets for _, ref in asset.tag_references())


def compile_devices(config: Config) -> list[DeviceSpec]:
    bound = bound_tags(config)
    specs = []
    for device in config.devices:
        policies = {f"{device.id}.{tag.name}": policy for tag in device.tags
                    if (policy := telemetry_policy(tag)) and f"{device.id}.{tag.name}" not in bound}
        specs.append(DeviceSpec(device.id, policies))  # every device: its status is an event
    return specs


def telemetry_policy(tag: TagBase) -> TelemetryPolicy | None:
    if tag.publish is None:
        return None
    return TelemetryPolicy(every=tag.publish_every, on_change=tag.publish == "on_change",
                           deadband=tag.deadband, deadband_percent=tag.deadband_percent,
                           min_interval=tag.min_interval)


def _compile(asset: Asset, config: Config) -> AssetSpec:
    roles = {asset.state.tag: "state"}
    counters = asset.counters
    if counters:
        roles[counters.good] = "good"
        if counters.scrap:
            roles[counters.scrap] = "scrap"
    if asset.reason.tag:
        roles[asset.reason.tag] = "reason"
    if asset.quality_hold:
        roles[asset.quality_hold.flag] = "hold"
        for key, role in (("lot", "lot"), ("reason", "hold_reason"), ("quantity", "hold_quantity")):
            ref = getattr(asset.quality_hold, key)
            if ref:
                roles[ref] = role
    if asset.work_order:
        roles[asset.work_order] = "work_order"
    lot_role = None
    if asset.production.lot:
        # One tag may name both the lot under hold and the lot being produced.
        lot_role = roles.setdefault(asset.production.lot, "production_lot")
    modulus: dict[str, int | None] = {}
    for ref, role in roles.items():
        if role in COUNTER_ROLES:
            modulus[role] = (counters.modulus if counters and counters.modulus
                             else _type_modulus(config, ref))
    telemetry = {}
    for ref in roles:
        device_id, tag_name = ref.split(".", 1)
        for tag in config.device(device_id).tags:
            if tag.name == tag_name and (policy := telemetry_policy(tag)):
                telemetry[ref] = policy
    return AssetSpec(
        id=asset.id,
        area=asset.area,
        line=asset.line,
        roles=roles,
        state_map=dict(asset.state.map),
        down_states=frozenset(asset.downtime.states),
        min_dwell=asset.state.min_dwell,
        micro_stop=asset.downtime.micro_stop,
        micro_stops=asset.downtime.micro_stops,
        interval=asset.production.interval,
        unit=asset.production.unit,
        parts_per_cycle=asset.production.parts_per_cycle,
        shifts=tuple((int(t[:2]), int(t[3:])) for t in sorted(asset.production.shifts)),
        timezone=asset.production.timezone,
        ideal_cycle=asset.oee.ideal_cycle,
        ideal_by_work_order=dict(asset.oee.by_work_order),
        reason_texts=dict(asset.reason.texts),
        default_reason=asset.reason.default,
        operator_reasons={c.code: (c.text, c.group) for c in asset.reason.choices},
        hold_reason_texts=dict(asset.quality_hold.reason_texts) if asset.quality_hold else {},
        counter_modulus=modulus,
        on_reset=counters.on_reset if counters else "count_from_zero",
        max_rate=counters.max_rate if counters else None,
        snapshot_interval=counters.snapshot_interval if counters else None,
        fault_persists=asset.maintenance.fault_persists,
        fault_repeats=asset.maintenance.fault_repeats,
        repeat_window=asset.maintenance.repeat_window,
        telemetry=telemetry,
        production_lot_role=lot_role,
    )


def _type_modulus(config: Config, ref: str) -> int | None:
    """The wrap a Modbus tag's type gives, on every Modbus transport. (OPC UA says it
    with each value: Sample.wraps_at.)"""
    device_id, tag_name = ref.split(".", 1)
    device = config.device(device_id)
    if isinstance(device, ModbusDeviceBase):
        for tag in device.tags:
            if tag.name == tag_name:
                return _MODBUS_MODULUS.get(tag.type)
    return None
