"""Load a configuration file into a `Config`, or explain every problem at once.

Each problem names the file and line, the field path, the bad value (secrets
masked) and what is expected. Structural problems come from pydantic;
cross-references (unknown tags, duplicate ids) are checked once the structure
is sound, because they need it.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from ..errors import ConfigError, ConfigIssue
from .models import (
    Config,
    Device,
    HttpAuth,
    ModbusRtuDevice,
    ModbusRtuOverTcpDevice,
    ModbusTag,
    MqttUplink,
    OpcUaDevice,
    OpcUaTag,
    Uplink,
)
from .secrets import MASK, UNAVAILABLE_SECRET, resolve_secrets
from .yamlsource import Path as DataPath
from .yamlsource import YamlDocument, YamlSyntaxError, parse_yaml

DEFAULT_CONFIG_PATH = Path("/etc/floorlink/config.yaml")
SECRET_FIELDS = frozenset({"password", "token", "secret", "api_key"})
_PATTERN_MEANING = {
    r"^[A-Za-z0-9][A-Za-z0-9_-]*$": "an identifier: letters, digits, '-' and '_', "
    "starting with a letter or digit",
    r"^[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9][A-Za-z0-9_-]*$": "a tag reference "
    "'<device id>.<tag name>', e.g. 'press1-plc.state'",
    r"^(nsu=[^;]+;|ns=\d+;)?[isgb]=.+$": "an OPC UA node id such as "
    "'nsu=urn:plant:line1;s=Press1.State' or 'ns=2;i=1001'",
    r"^opc\.tcp://[^/\s]+(/.*)?$": "an endpoint such as 'opc.tcp://10.0.0.5:4840'",
    r"^([01]\d|2[0-3]):[0-5]\d$": "a time of day 'HH:MM', from 00:00 to 23:59",
    r"^https?://[^\s/]+(/\S*)?$": "an address such as 'https://mes.plant.local/events', "
    "without spaces",
}


def default_config_path() -> Path:
    return Path(os.environ.get("FLOORLINK_CONFIG", str(DEFAULT_CONFIG_PATH)))


def load_config(path: Path, secrets_required: bool = True) -> Config:
    """`secrets_required=False` is for commands that never use a secret (`floorlink buffer`):
    a technician without access to the service's credentials can still run them."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(shown, None, "", None, f"cannot read the file: {exc.strerror or exc}; "
                         "pass another one with -c/--config or set FLOORLINK_CONFIG")]
        ) from exc
    return load_config_text(text, shown, path.resolve().parent, secrets_required)


def load_config_text(text: str, shown: str, base_dir: Path,
                     secrets_required: bool = True) -> Config:
    try:
        doc = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigError(
            [ConfigIssue(shown, exc.line, "", None, f"not valid YAML: {exc.message}")]
        ) from exc
    issues: list[ConfigIssue] = []
    for dup_path, line in doc.duplicates:
        first = doc.lines.get(dup_path)
        issues.append(ConfigIssue(
            shown, line, _dotted(dup_path), None,
            f"duplicate key '{dup_path[-1]}' (first given on line {first}); keep only one",
        ))
    if not isinstance(doc.data, dict):
        issues.append(ConfigIssue(
            shown, doc.line_of(()), "", None,
            "the file must be a mapping with at least 'site' and 'devices'",
        ))
        raise ConfigError(issues)

    secrets = resolve_secrets(doc.data, base_dir,
                              None if secrets_required else UNAVAILABLE_SECRET)
    for secret_path, reference, why in secrets.problems:
        issues.append(ConfigIssue(shown, doc.line_of(secret_path), _dotted(secret_path),
                                  f"'{reference}'", why))
    masker = _Masker(secrets.secret_paths)

    try:
        config = Config(**secrets.data)
    except ValidationError as exc:
        issues.extend(_explain(error, doc, shown, masker) for error in exc.errors())
        raise ConfigError(issues) from None
    issues.extend(_check_references(config, doc, shown, secrets.secret_paths, base_dir))
    if issues:
        raise ConfigError(issues)
    return _absolute_paths(config, base_dir)


def _absolute_paths(config: Config, base_dir: Path) -> Config:
    """Relative file names in the config are relative to the config file."""
    update: dict[str, Any] = {}
    if not config.buffer.path.is_absolute():
        update["buffer"] = config.buffer.model_copy(update={"path": base_dir / config.buffer.path})
    update["uplinks"] = [
        uplink.model_copy(update={"tls": _rebased(uplink.tls, base_dir)}) if uplink.tls
        else uplink for uplink in config.uplinks]
    update["devices"] = [
        device.model_copy(update={"security": _rebased(device.security, base_dir)})
        if isinstance(device, OpcUaDevice) else device for device in config.devices]
    return config.model_copy(update=update)


def _rebased(settings: Any, base_dir: Path) -> Any:
    """A copy of a settings block whose Path fields are relative to the config file."""
    files = {key: base_dir / value for key, value in vars(settings).items()
             if isinstance(value, Path)}
    return settings.model_copy(update=files)


class _Masker:
    def __init__(self, secret_paths: set[DataPath]) -> None:
        self._paths = secret_paths

    def show(self, path: DataPath, value: Any) -> str:
        if path in self._paths or (path and str(path[-1]) in SECRET_FIELDS):
            return MASK
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."


def _explain(error: ErrorDetails, doc: YamlDocument, shown: str, masker: _Masker) -> ConfigIssue:
    path = _data_path(error["loc"], doc.data)
    kind = error["type"]
    value: str | None = masker.show(path, error.get("input"))
    if kind == "union_tag_invalid":
        # Point at the `protocol:`/`type:` line, showing the unsupported value itself.
        discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        path = (*path, discriminator)
        value = repr(error.get("ctx", {}).get("tag"))
    line = doc.line_of(path)
    if line is None or path not in doc.lines:
        env_name = "FLOORLINK_" + "__".join(str(p).upper() for p in path)
        if env_name in os.environ:
            return ConfigIssue(f"environment {env_name}", None, _dotted(path), value,
                               _message(error, path, doc.data))
    if kind == "missing":
        value = None
    return ConfigIssue(shown, line, _dotted(path), value, _message(error, path, doc.data))


def _message(error: ErrorDetails, path: DataPath, data: Any) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path[:-1], data)
        hint = ""
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        if close:
            hint = f" Did you mean '{close[0]}'?"
        listed = ", ".join(allowed) if allowed else "none"
        return f"unknown key '{path[-1]}'.{hint} Expected one of: {listed}"
    if kind == "missing":
        return f"required key '{path[-1]}' is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        expected = ctx.get("expected_tags", "")
        if kind == "union_tag_not_found":
            return f"'{discriminator}' is missing; expected one of {expected}"
        return f"unsupported {discriminator} '{ctx.get('tag')}'; expected one of {expected}"
    if kind == "string_pattern_mismatch":
        meaning = _PATTERN_MEANING.get(str(ctx.get("pattern", "")))
        if meaning:
            return f"expected {meaning}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[0].lower() + message[1:] if message else message


def _data_path(loc: tuple[int | str, ...], data: Any) -> DataPath:
    """Map pydantic's error location onto the YAML's own path.

    Pydantic inserts the discriminator value of a tagged union ("modbus_tcp") and
    validator names into `loc`; they are not keys of the document, so drop them.
    """
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            key: Any = part
            if part not in node and isinstance(part, str) and part.lstrip("-").isdigit():
                key = int(part)  # dict[int, ...] keys are reported as strings
            if key in node:
                path.append(key)
                node = node[key]
                continue
            if part in _union_tags():
                continue
            path.append(part)
            node = None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif part in _union_tags() or part in ("[key]",):
            continue
        else:
            path.append(part)
            node = None
    return tuple(path)


@functools.cache
def _union_tags() -> frozenset[str]:
    """Every value that selects a variant of a tagged union (`protocol: opcua`, `type:
    odoo`), read from the models so that a new kind of device or uplink is never missed."""
    tags: set[str] = set()
    for union, key in ((Device, "protocol"), (Uplink, "type"), (HttpAuth, "type")):
        for model in _models_in(union):
            tags.update(str(tag) for tag in get_args(model.model_fields[key].annotation))
    return frozenset(tags)


def _allowed_keys(path: DataPath, data: Any) -> list[str]:
    """Field names of the model found at `path`, for 'did you mean' hints."""
    candidates: list[type[BaseModel]] = [Config]
    node = data
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        model = _pick_model(candidates, node)
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        candidates = _models_in(field.annotation)
    model = _pick_model(candidates, node)
    return sorted(
        (info.alias or name) for name, info in getattr(model, "model_fields", {}).items()
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every BaseModel inside list[...], X | None, Annotated[...] and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found.extend(_models_in(arg))
    origin = getattr(annotation, "__origin__", None)
    if not found and origin is not None and origin is not annotation:
        found.extend(_models_in(origin))
    return found


def _pick_model(models: list[type[BaseModel]], node: Any) -> Any:
    """The variant of a tagged union that the data's `protocol`/`type` selects."""
    if len(models) <= 1 or not isinstance(node, dict):
        return models[0] if models else None
    for model in models:
        for key in ("protocol", "type"):
            field = model.model_fields.get(key)
            if field is not None and node.get(key) in getattr(field.annotation, "__args__", ()):
                return model
    return models[0]


def _secret_fields(model: BaseModel, at: DataPath) -> Iterator[DataPath]:
    """Paths of every secret value set in `model`, nested models included."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield (*at, name)
        elif isinstance(value, BaseModel):
            yield from _secret_fields(value, (*at, name))


def _check_references(
    config: Config, doc: YamlDocument, shown: str, secret_paths: set[DataPath],
    base_dir: Path,
) -> Iterable[ConfigIssue]:
    def issue(path: DataPath, value: str | None, message: str) -> ConfigIssue:
        return ConfigIssue(shown, doc.line_of(path), _dotted(path), value, message)

    duplicate_devices = dict(_repeats(d.id for d in config.devices))
    for index, first in duplicate_devices.items():
        yield issue(("devices", index, "id"), repr(config.devices[index].id),
                    f"duplicate device id; devices[{first}] already uses it. Give each device "
                    "its own id")
    tags: dict[str, set[str]] = {}
    for d_index, device in enumerate(config.devices):
        if d_index in duplicate_devices:
            continue
        device_tags: list[OpcUaTag | ModbusTag] = list(device.tags)
        for t_index, first in _repeats(t.name for t in device_tags):
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

    yield from _check_shared_buses(config, issue)

    for index, first in _repeats(a.id for a in config.assets):
        yield issue(("assets", index, "id"), repr(config.assets[index].id),
                    f"duplicate asset id; assets[{first}] already uses it")
    for a_index, asset in enumerate(config.assets):
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
                tag = next(t for t in config.device(device_id).tags if t.name == tag_name)
                scale = float(getattr(tag, "scale", 1.0))
                if not scale.is_integer() or scale < 1:
                    yield issue(ref_path, repr(ref),
                                f"tag '{ref}' has scale {scale:g}, and a counter counts whole "
                                "parts: give it a whole-number scale (1 unless the PLC counts "
                                "in tens or hundreds), or use production.parts_per_cycle")

    for index, first in _repeats(u.id for u in config.uplinks):
        yield issue(("uplinks", index, "id"), repr(config.uplinks[index].id),
                    f"duplicate uplink id; uplinks[{first}] already uses it")
    client_ids = [u.client_id if isinstance(u, MqttUplink) else None for u in config.uplinks]
    for index, _ in _repeats(client_ids):
        yield issue(("uplinks", index, "client_id"), repr(client_ids[index]),
                    "two uplinks with one MQTT client id disconnect each other; make them differ")
    asset_ids = {a.id for a in config.assets}
    for u_index, uplink in enumerate(config.uplinks):
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


def _check_shared_buses(config: Config, issue: Any) -> Iterator[ConfigIssue]:
    """Devices on one RTU line must agree on its settings and use distinct unit ids."""
    first_on_line: dict[str, int] = {}
    units: dict[tuple[str, int], int] = {}
    for index, device in enumerate(config.devices):
        line = bus_key(device)
        if line is None or isinstance(device, OpcUaDevice):
            continue
        if line in first_on_line:
            first = config.devices[first_on_line[line]]
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


def _repeats(keys: Iterable[str | None]) -> Iterator[tuple[int, int]]:
    """(index, index of its first use) for every key seen before; None never repeats."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
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


def _dotted(path: DataPath) -> str:
    """`devices[1].tags[0].name`; integer keys of a mapping (state codes) stay `map.3`."""
    out = ""
    for part in path:
        if isinstance(part, int) and out.rsplit(".", 1)[-1] not in _INT_KEYED:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_INT_KEYED = frozenset({"map", "texts"})
