"""Load a configuration file into a `Config`, or explain every problem at once.

Each problem names the file and line (or the environment variable), the field
path, the bad value (secrets masked) and what is expected. Structural problems
come from pydantic; cross-references (unknown tags, duplicate ids) are checked on
every device, asset and uplink that passed its schema, so one run reports every
problem, as the README promises (references.py).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import ConfigError, ConfigIssue
from .models import (
    Config,
    Device,
    HttpAuth,
    OpcUaDevice,
    Uplink,
)
from .references import Parts, check_references, dotted
from .secrets import MASK, UNAVAILABLE_SECRET, resolve_secrets
from .yamlsource import Path as DataPath
from .yamlsource import YamlDocument, YamlSyntaxError, parse_yaml

DEFAULT_CONFIG_PATH = Path("/etc/floorlink/config.yaml")
MAX_CONFIG_BYTES = 4 << 20  # about 75,000 tags, which load in 350 MB
SUPPORTED_TAGS = 20_000  # bench/config_scale.py measures load time and memory up to this
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
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(shown, None, "", None, f"cannot read the file: {exc.strerror or exc}; "
                         "pass another one with -c/--config or set FLOORLINK_CONFIG")]
        ) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigIssue(
            shown, None, "", None, f"the file is over {MAX_CONFIG_BYTES >> 20} MB; a "
            f"configuration is far smaller (floorlink is measured up to {SUPPORTED_TAGS:,} tags, "
            "about 1 MB). Is this the right file?")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(
            shown, line, "", None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); a configuration is a YAML text file. Is this the right file?")]
        ) from None
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
            shown, line, dotted(dup_path), None,
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
        issues.append(ConfigIssue(shown, doc.line_of(secret_path), dotted(secret_path),
                                  f"'{reference}'", why))
    masker = _Masker(secrets.secret_paths)

    data = secrets.data
    for key in [k for k in data if not isinstance(k, str)]:
        issues.append(ConfigIssue(shown, doc.line_of((_path_key_of(key),)), str(key), None,
                                  f"a top-level key is a name such as 'devices', not {key!r}"))
        data = {k: v for k, v in data.items() if k != key}
    try:
        config = Config(**data)
    except ValidationError as exc:
        issues.extend(_explain(error, doc, shown, masker) for error in exc.errors())
        # Every problem at once: the parts that did validate are still cross-checked.
        issues.extend(check_references(Parts.of_valid(data), doc, shown,
                                        secrets.secret_paths, base_dir))
        raise ConfigError(issues) from None
    issues.extend(check_references(Parts.of(config), doc, shown, secrets.secret_paths,
                                    base_dir))
    if issues:
        raise ConfigError(issues)
    return _absolute_paths(config, base_dir)


def _path_key_of(key: Any) -> str | int:
    return key if isinstance(key, int) else str(key)


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
    env_name = _overriding_variable(path)
    if env_name is not None:
        # The environment overrides the file: the variable is what to change, even where
        # the file has a line for the same key.
        return ConfigIssue(f"environment {env_name}", None, dotted(path), value,
                           _message(error, path, doc.data))
    if kind == "missing":
        value = None
    return ConfigIssue(shown, line, dotted(path), value, _message(error, path, doc.data))


def _overriding_variable(path: DataPath) -> str | None:
    """The FLOORLINK_<SECTION>__<KEY> variable that set `path` or a section holding it."""
    names: list[str] = []
    for part in path:
        if not isinstance(part, str):
            break  # list items are overridden only with their whole list
        names.append(part.upper())
    for end in range(len(names), 0, -1):
        env_name = "FLOORLINK_" + "__".join(names[:end])
        if env_name in os.environ:
            return env_name
    return None


def _did_you_mean(given: Any, expected: str) -> str:
    """" Did you mean 'float32'?" for a value close to one of `expected` ("'a', 'b'")."""
    choices = re.findall(r"'([^']*)'", expected)
    import difflib  # only a config with a mistake needs it (0.2 MB for every agent)

    scored = [(difflib.SequenceMatcher(None, str(given), choice).ratio(), -index, choice)
              for index, choice in enumerate(choices)]
    best = max(scored, default=None)  # on a tie, the choice listed first (float32, not 64)
    return f" Did you mean '{best[2]}'?" if best is not None and best[0] >= 0.6 else ""


def _message(error: ErrorDetails, path: DataPath, data: Any) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        import difflib  # as in _did_you_mean

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
        return (f"unsupported {discriminator} '{ctx.get('tag')}'."
                f"{_did_you_mean(ctx.get('tag'), str(expected))} Expected one of {expected}")
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        return (f"unknown value {error.get('input')!r}."
                f"{_did_you_mean(error.get('input'), expected)} Expected {expected}")
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


