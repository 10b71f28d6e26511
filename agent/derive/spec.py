"""What derivation needs to know about one asset, compiled once from the config."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..settings.models import DOWN_STATES, Asset, Config, ModbusTcpDevice

# Roles a tag can play for an asset; context roles are applied before edges.
CONTEXT_ROLES = ("reason", "lot", "hold_reason", "hold_quantity")
COUNTER_ROLES = ("good", "scrap")
ROLE_ORDER = (*CONTEXT_ROLES, *COUNTER_ROLES, "work_order", "state", "hold")

_MODBUS_MODULUS = {"uint16": 1 << 16, "uint32": 1 << 32, "uint64": 1 << 64,
                   "int16": 1 << 15, "int32": 1 << 31, "int64": 1 << 63}


@dataclass(frozen=True)
class AssetSpec:
    id: str
    area: str | None
    line: str | None
    roles: dict[str, str]  # "<device>.<tag>" -> role
    state_map: dict[int, str]
    down_states: frozenset[str] = DOWN_STATES
    micro_stop: float = 60.0
    interval: float = 300.0
    unit: str = "Units"
    parts_per_cycle: int = 1
    reason_texts: dict[int, str] = field(default_factory=dict)
    default_reason: str = "unclassified"
    hold_reason_texts: dict[int, str] = field(default_factory=dict)
    # Where a counter wraps (its type's range), when the device tells us; None = unknown.
    counter_modulus: dict[str, int | None] = field(default_factory=dict)


def compile_assets(config: Config) -> list[AssetSpec]:
    return [_compile(asset, config) for asset in config.assets]


def _compile(asset: Asset, config: Config) -> AssetSpec:
    roles = {asset.state.tag: "state"}
    if asset.counters:
        roles[asset.counters.good] = "good"
        if asset.counters.scrap:
            roles[asset.counters.scrap] = "scrap"
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
    modulus: dict[str, int | None] = {}
    for ref, role in roles.items():
        if role in COUNTER_ROLES:
            modulus[role] = _counter_modulus(config, ref)
    return AssetSpec(
        id=asset.id,
        area=asset.area,
        line=asset.line,
        roles=roles,
        state_map=dict(asset.state.map),
        micro_stop=asset.downtime.micro_stop,
        interval=asset.production.interval,
        unit=asset.production.unit,
        parts_per_cycle=asset.production.parts_per_cycle,
        reason_texts=dict(asset.reason.texts),
        default_reason=asset.reason.default,
        counter_modulus=modulus,
        hold_reason_texts=dict(asset.quality_hold.reason_texts) if asset.quality_hold else {},
    )


def _counter_modulus(config: Config, ref: str) -> int | None:
    device_id, tag_name = ref.split(".", 1)
    device = config.device(device_id)
    if isinstance(device, ModbusTcpDevice):
        for tag in device.tags:
            if tag.name == tag_name:
                return _MODBUS_MODULUS.get(tag.type)
    return None
