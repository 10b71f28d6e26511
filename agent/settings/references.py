"""Cross-references in a configuration: what one part says about another.

A tag an asset names must exist on its device; ids must be unique; devices on one RTU
line must agree on its settings; secrets must not sit in the file in clear; files the
config names must exist. These run on every device, asset and uplink that passed its
schema, even when another part did not, so that one run reports every problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from ..errors import ConfigIssue
from .models import (
    Asset,
    Config,
    Device,
    ModbusRtuDevice,
    ModbusRtuOverTcpDevice,
    ModbusTag,
    MqttUplink,
    OpcUaDevice,
    OpcUaTag,
    Uplink,
)
from .secrets import MASK
from .sparkplug import SparkplugUplink
from .yamlsource import Path as DataPath
from .yamlsource import YamlDocument


@dataclass
class Parts:
    """The devices, assets and uplinks that validated, by their index in the file."""

    devices: dict[int, Device]
    assets: dict[int, Asset]
    uplinks: dict[int, Uplink]

    @classmethod
    def of(cls, config: Config) -> Parts:
        return cls(dict(enumerate(config.devices)), dict(enumerate(config.assets)),
                   dict(enumerate(config.uplinks)))

    @classmethod
    def of_valid(cls, data: dict[str, Any]) -> Parts:
        return cls(_valid_items(data.get("devices"), _DEVICE),
                   _valid_items(data.get("assets"), _ASSET),
                   _valid_items(data.get("uplinks"), _UPLINK))

    def device(self, device_id: str) -> Device:
        return next(d for d in self.devices.values() if d.id == device_id)


_DEVICE: TypeAdapter[Device] = TypeAdapter(Device)
_ASSET: TypeAdapter[Asset] = TypeAdapter(Asset)
_UPLINK: TypeAdapter[Uplink] = TypeAdapter(Uplink)


def _valid_items(items: Any, adapter: TypeAdapter[Any]) -> dict[int, Any]:
    valid: dict[int, Any] = {}
    for index, item in enumerate(items if isinstance(items, list) else []):
        try:
            valid[index] = adapter.validate_python(item)
        except (ValidationError, TypeError):
            continue
    return valid


def _secret_fields(model: BaseModel, at: DataPath) -> Iterator[DataPath]:
    """Paths of every secret value set in `model`, nested models included."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield (*at, name)
        elif isinstance(value, BaseModel):
            yield from _secret_fields(value, (*at, name))


def check_references(
    parts: Parts, doc: YamlDocument, shown: str, secret_paths: set[DataPath],
    base_dir: Path,
) -> Iterable[ConfigIssue]:
    def issue(path: DataPath, value: str | None, message: str) -> ConfigIssue:
        return ConfigIssue(shown, doc.line_of(path), dotted(path), value, message)

    duplicate_devices = dict(_repeats_in({i: d.id for i, d in parts.devices.items()}))
    for index, first in duplicate_devices.items():
        yield issue(("devices", index, "id"), repr(parts.devices[index].id),
                    f"duplicate device id; devices[{first}] already uses it. Give each device "
                    "its own id")
    tags: dict[str, set[str]] = {}
    for d_index, device in parts.devices.items():
        if d_index in duplicate_devices:
            continue
        device_tags: list[OpcUaTag | ModbusTag] = list(device.tags)
        for t_index, first in _repeats_in({i: t.name for i, t in enumerate(device_tags)}):
            yield issue(("devices", d_index, "tags", t_index, "name"),
                        repr(device_tags[t_index].name),
                        f"duplicate tag name in device '{device.id}'; tags[{first}] "
                        "already uses it")
        tags[device.id] = {t.name for t in device_tags}
        if isinstance(device, OpcUaDevice):
            yield from _check_opcua_files(device, d_index, base_dir, issue)
        pw_path: DataPath = ("devices", d_index, "password")
        if getattr(device, "password", None) is not None and pw_path not in secret_paths:
            yield _clear_secret(issue, pw_path)

    yield from _check_shared_buses(parts.devices, issue)

    for index, first in _repeats_in({i: a.id for i, a in parts.assets.items()}):
        yield issue(("assets", index, "id"), repr(parts.assets[index].id),
                    f"duplicate asset id; assets[{first}] already uses it")
    for a_index, asset in parts.assets.items():
        for rel_path, ref in asset.tag_references():
            device_id, tag_name = ref.split(".", 1)
            ref_path: DataPath = ("assets", a_index, *rel_path)
            if device_id not in tags:
                known = ", ".join(sorted(tags)) or "none"
                yield issue(ref_path, repr(ref),
                            f"no device '{device_id}' is defined; devices are: {known}")
            elif tag_name not in tags[device_id]:
                known = ", ".join(sorted(tags[device_id]))
                yield issue(ref_path, repr(ref),
                            f"device '{device_id}' has no tag '{tag_name}'; its tags are: {known}")
            elif rel_path[0] == "counters":
                tag = next(t for t in parts.device(device_id).tags if t.name == tag_name)
                scale = float(getattr(tag, "scale", 1.0))
                if not scale.is_integer() or scale < 1:
                    yield issue(ref_path, repr(ref),
                                f"tag '{ref}' has scale {scale:g}, and a counter counts whole "
                                "parts: give it a whole-number scale (1 unless the PLC counts "
                                "in tens or hundreds), or use production.parts_per_cycle")

    for index, first in _repeats_in({i: u.id for i, u in parts.uplinks.items()}):
        yield issue(("uplinks", index, "id"), repr(parts.uplinks[index].id),
                    f"duplicate uplink id; uplinks[{first}] already uses it")
    client_ids = {i: u.client_id if isinstance(u, MqttUplink | SparkplugUplink) else None
                  for i, u in parts.uplinks.items()}
    for index, _ in _repeats_in(client_ids):
        yield issue(("uplinks", index, "client_id"), repr(client_ids[index]),
                    "two uplinks with one MQTT client id disconnect each other; make them differ")
    yield from _check_sparkplug_devices(parts, issue)
    asset_ids = {a.id for a in parts.assets.values()}
    for u_index, uplink in parts.uplinks.items():
        for asset_id in getattr(uplink, "assets", {}):
            if asset_id not in asset_ids:
                yield issue(("uplinks", u_index, "assets", asset_id), repr(asset_id),
                            "no asset has this id; assets are: "
                            + (", ".join(sorted(asset_ids)) or "none"))
        for secret_path in _secret_fields(uplink, ("uplinks", u_index)):
            if secret_path not in secret_paths:
                yield _clear_secret(issue, secret_path)
        if uplink.tls is not None:
            for key in ("ca_file", "cert_file", "key_file"):
                path = getattr(uplink.tls, key)
                if path is not None and not (base_dir / path).is_file():
                    yield issue(("uplinks", u_index, "tls", key), repr(str(path)),
                                f"no such file: {base_dir / path}; give the PEM file's path "
                                "(relative paths are relative to the config file)")


def _check_sparkplug_devices(parts: Parts, issue: Any) -> Iterator[ConfigIssue]:
    """A Sparkplug device's metrics are its tags with `publish:`: their births carry the
    last value committed for each, and a tag with no telemetry has none. A device
    without such a tag would be an empty Sparkplug device."""
    sparkplug = [u.id for u in parts.uplinks.values() if isinstance(u, SparkplugUplink)]
    if not sparkplug:
        return
    for d_index, device in parts.devices.items():
        if not any(tag.publish is not None for tag in device.tags):
            yield issue(("devices", d_index, "tags"), None,
                        f"uplink '{sparkplug[0]}' (sparkplug) shows each device's tags that "
                        f"have `publish:`, and device '{device.id}' has none: add "
                        "`publish: on_change` to the tags the host application should see")


def _check_opcua_files(device: OpcUaDevice, index: int, base_dir: Path,
                       issue: Any) -> Iterator[ConfigIssue]:
    security = device.security
    for key, path in security.files().items():
        if not (base_dir / path).is_file():
            yield issue(("devices", index, "security", key), repr(str(path)),
                        f"no such file: {base_dir / path}; `floorlink opcua-cert` makes a "
                        "certificate and key (relative paths are relative to the config file)")
    folder = security.trusted_servers
    if folder is not None and not (base_dir / folder).is_dir():
        yield issue(("devices", index, "security", "trusted_servers"), repr(str(folder)),
                    f"no such folder: {base_dir / folder}; create it and put the server "
                    "certificates you trust in it")


def _check_shared_buses(devices: dict[int, Device], issue: Any) -> Iterator[ConfigIssue]:
    """Devices on one RTU line must agree on its settings and use distinct unit ids."""
    first_on_line: dict[str, int] = {}
    units: dict[tuple[str, int], int] = {}
    for index, device in devices.items():
        line = bus_key(device)
        if line is None or isinstance(device, OpcUaDevice):
            continue
        if line in first_on_line:
            first = devices[first_on_line[line]]
            for setting in ("baudrate", "parity", "bytesize", "stopbits", "frame_gap"):
                mine, theirs = getattr(device, setting, None), getattr(first, setting, None)
                if mine != theirs:
                    yield issue(("devices", index, setting), repr(mine),
                                f"devices[{first_on_line[line]}] ({first.id}) shares this line "
                                f"with {setting} {theirs!r}; one line has one setting")
        first_on_line.setdefault(line, index)
        if (line, device.unit) in units:
            yield issue(("devices", index, "unit"), repr(device.unit),
                        f"unit {device.unit} is already devices[{units[(line, device.unit)]}] "
                        "on this line; each unit on a bus needs its own id")
        units.setdefault((line, device.unit), index)


def bus_key(device: object) -> str | None:
    """The shared line a device sits on, or None for a connection of its own."""
    if isinstance(device, ModbusRtuDevice):
        return f"rtu:{device.port}"
    if isinstance(device, ModbusRtuOverTcpDevice):
        return f"rtu-over-tcp:{device.host}:{device.port}"
    return None


def _repeats_in(keys: dict[int, str | None]) -> Iterator[tuple[int, int]]:
    """(index, index of its first use) for every key seen before; None never repeats."""
    first: dict[str, int] = {}
    for index, key in keys.items():
        if key is None:
            continue
        if key in first:
            yield index, first[key]
        else:
            first[key] = index


def _clear_secret(issue: Any, path: DataPath) -> ConfigIssue:
    result: ConfigIssue = issue(
        path, MASK,
        "a secret must not sit in the file in clear; write ${env:NAME}, ${file:/path} or "
        "${cred:NAME} (a systemd credential) instead",
    )
    return result


def dotted(path: DataPath) -> str:
    """`devices[1].tags[0].name`; integer keys of a mapping (state codes) stay `map.3`."""
    out = ""
    for part in path:
        if isinstance(part, int) and out.rsplit(".", 1)[-1] not in _INT_KEYED:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_INT_KEYED = frozenset({"map", "texts"})
