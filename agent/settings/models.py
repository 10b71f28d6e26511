"""The configuration, parsed once into frozen, typed models.

Two things are kept apart, as plant engineers think of them: `devices` say how
to talk to a PLC and which tags it has; `assets` say what those tags mean to
the business. Assets refer to tags as "<device id>.<tag name>".
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    ByteSize,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .base import (
    EventFilter,
    HttpBackoff,
    HttpTimeouts,
    Identifier,
    Port,
    Strict,
    TagRef,
    TlsSettings,
)
from .brokers import BrokerConnection
from .durations import MIN_INTERVAL, Duration, parse_duration
from .odoo import OdooUplink
from .sparkplug import SparkplugUplink

if TYPE_CHECKING:
    from buffer.retention import Limits

# ---------------------------------------------------------------- devices


class TagBase(Strict):
    name: Identifier
    publish: str | None = Field(
        default=None,
        description="Telemetry for this tag: 'on_change' (with deadband and min_interval) or "
        "'every <duration>', e.g. 'every 10s'. Off when absent.",
    )
    deadband: float | None = Field(default=None, ge=0, description="Absolute, for on_change.")
    deadband_percent: float | None = Field(
        default=None, gt=0, le=100, description="Relative to the last published value."
    )
    min_interval: Duration = Field(default=0.0, ge=0, description="Between on_change events.")

    @field_validator("publish")
    @classmethod
    def _publish_mode(cls, value: str | None) -> str | None:
        if value is None or value == "on_change":
            return value
        match = re.fullmatch(r"every\s+(.+)", value.strip())
        if match is None:
            raise ValueError("expected 'on_change' or 'every <duration>', e.g. 'every 10s'")
        parse_duration(match.group(1))
        return value

    @property
    def publish_every(self) -> float | None:
        if self.publish is None or self.publish == "on_change":
            return None
        return float(parse_duration(self.publish.strip()[len("every"):].strip()))


OPCUA_POLICIES = ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")


def _browse_path(value: str | None) -> str | None:
    if value is None:
        return value
    parts = value.strip("/").split("/")
    if not all(part.strip() for part in parts):
        raise ValueError("a browse path is browse names separated by '/', e.g. "
                         "'Line1/Press1/State'; found an empty element")
    return value


class OpcUaTag(TagBase):
    node: Annotated[
        str | None,
        StringConstraints(pattern=r"^(nsu=[^;]+;|ns=\d+;)?[isgb]=.+$"),
        Field(
            description=(
                "Node id. Prefer the namespace URI form 'nsu=urn:...;s=Line1.Press1.State', "
                "which survives a server reordering its namespaces."
            )
        ),
    ] = None
    path: Annotated[str | None, AfterValidator(_browse_path)] = Field(
        default=None,
        description=(
            "Browse path from the Objects folder instead of a node id, e.g. "
            "'Line1/Press1/State'. Names are in the tag's (or device's) `namespace`; "
            "'0:Name' is a name in the OPC UA standard namespace."
        ),
    )
    namespace: str | None = Field(
        default=None, description="Namespace URI of `path`'s names (default: the device's)."
    )
    mode: Literal["subscribe", "poll"] = Field(
        default="subscribe",
        description="subscribe: the server reports changes (monitored item); poll: batched reads.",
    )
    sampling_interval: Duration | None = Field(
        default=None, ge=0, description="How often the server samples (subscribe); "
        "default: the device's publishing_interval."
    )
    queue_size: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=1, description="Changes the server keeps between publishes (subscribe)."
    )
    server_deadband: float | None = Field(
        default=None, ge=0,
        description="Absolute deadband applied by the server (subscribe; numeric values).",
    )
    poll_interval: Duration | None = Field(
        default=None, ge=MIN_INTERVAL,
        description="poll mode: default the device's poll_interval.",
    )

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaTag:
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of 'node' (a node id) or 'path' (a browse path)")
        return self


class OpcUaSecurity(Strict):
    """Message security for the secure channel, and which server certificates to trust."""

    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = (
        "Basic256Sha256")
    certificate: Path | None = Field(
        default=None, description="floorlink's client certificate (PEM or DER); "
        "make one with `floorlink opcua-cert`."
    )
    private_key: Path | None = Field(default=None, description="Its private key (PEM).")
    trusted_servers: Path | None = Field(
        default=None,
        description="Folder of trusted server certificates (DER or PEM). An untrusted "
        "server's certificate is saved to <folder>/../rejected/ for review.",
    )
    trust_on_first_use: bool = Field(
        default=False,
        description="Trust the first certificate a server presents and store it in "
        "trusted_servers. Off by default: anyone answering first would be trusted.",
    )

    @model_validator(mode="after")
    def _complete(self) -> OpcUaSecurity:
        if self.mode != "None":
            missing = [name for name in ("certificate", "private_key", "trusted_servers")
                       if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"mode {self.mode} needs {', '.join(missing)}: a client certificate and "
                    "key (`floorlink opcua-cert` makes them) and a folder of trusted server "
                    "certificates")
        return self

    def files(self) -> dict[str, Path]:
        named = {"certificate": self.certificate, "private_key": self.private_key}
        return {key: path for key, path in named.items() if path is not None}


class OpcUaDevice(Strict):
    id: Identifier
    protocol: Literal["opcua"]
    endpoint: Annotated[str, StringConstraints(pattern=r"^opc\.tcp://[^/\s]+(/.*)?$")]
    timeout: Duration = Field(default=5.0, ge=MIN_INTERVAL,
                              description="Connect and request timeout.")
    max_string: Annotated[int, Field(ge=16, le=65536)] = Field(
        default=256,
        description="Longest string value taken from the server, in characters: a longer "
        "one is cut, ends in '…[cut]', and is warned about once per tag. (Modbus strings "
        "are bounded by their tag's length.)",
    )
    max_backoff: Duration = Field(
        default=10.0, gt=0, le=300,
        description="Longest wait between reconnect attempts: the wait doubles from 0.5 s up "
        "to this, and starts over once data flows.",
    )
    publishing_interval: Duration = Field(default=0.25, ge=MIN_INTERVAL)
    keepalive: Duration = Field(
        default=5.0, gt=0,
        description="With no changes, the server still answers every this often; a "
        "subscription silent for 3 keep-alives is stale and is created again.",
    )
    poll_interval: Duration = Field(default=1.0, ge=MIN_INTERVAL,
                                    description="For tags in poll mode.")
    items_per_subscription: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=1000, description="Monitored items per subscription; more make several."
    )
    max_per_call: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Nodes per read or monitored-item request, for servers that enforce a "
        "limit without publishing it (default: the server's OperationLimits).",
    )
    namespace: str | None = Field(
        default=None, description="Namespace URI for tags' browse paths."
    )
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    username: str | None = None
    password: SecretStr | None = None
    tags: list[OpcUaTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _paths_have_namespaces(self) -> OpcUaDevice:
        for tag in self.tags:
            if tag.path is None or tag.namespace or self.namespace:
                continue
            if any(not part.startswith("0:") for part in tag.path.strip("/").split("/")):
                raise ValueError(
                    f"tag '{tag.name}': the browse path's names need a namespace; set "
                    "'namespace: <URI>' on the tag or the device, or write '0:Name' for "
                    "names in the standard namespace")
        return self


ModbusTable = Literal["coil", "discrete_input", "input_register", "holding_register"]
ModbusType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "string"
]
REGISTER_WIDTH: dict[str, int] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}
# Conventional one-based Modbus numbering: 40001 is holding register 0.
_CONVENTIONAL = (
    (1, 9999, "coil", 1), (10001, 19999, "discrete_input", 10001),
    (30001, 39999, "input_register", 30001), (40001, 49999, "holding_register", 40001),
    (100001, 165536, "discrete_input", 100001), (300001, 365536, "input_register", 300001),
    (400001, 465536, "holding_register", 400001),
)


def split_conventional_register(number: int) -> tuple[ModbusTable, int]:
    for low, high, table, base in _CONVENTIONAL:
        if low <= number <= high:
            return table, number - base  # type: ignore[return-value]
    raise ValueError(
        f"{number} is not a conventional Modbus register number; use 1-9999 (coils), "
        "10001-19999 (discrete inputs), 30001-39999 (input registers), 40001-49999 "
        "(holding registers), their six-digit forms, or 'table' with a zero-based 'address'"
    )


class ModbusTag(TagBase):
    table: ModbusTable | None = Field(
        default=None, description="With 'address' (zero-based). Not together with 'register'."
    )
    address: Annotated[int, Field(ge=0, le=65535)] | None = None
    register_number: int | None = Field(
        default=None,
        alias="register",
        description="Conventional one-based number, e.g. 40001 = holding register address 0.",
    )
    type: ModbusType = "uint16"
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = Field(
        default="ABCD",
        description="Byte order of multi-register values: ABCD is big-endian words and bytes.",
    )
    length: Annotated[int, Field(ge=1, le=125)] | None = Field(
        default=None, description="Registers of a 'string' tag (two characters each)."
    )
    bit: Annotated[int, Field(ge=0, le=15)] | None = Field(
        default=None, description="For type 'bool' on a register table: the bit, 0 = LSB."
    )
    scale: float = 1.0
    offset: float = 0.0
    enum: dict[int, str] | None = Field(
        default=None,
        description="Map raw integer values to names, e.g. {0: 'off', 1: 'auto'}; a value "
        "with no name is passed on as its number.",
    )

    @model_validator(mode="after")
    def _one_addressing_form(self) -> ModbusTag:
        zero_based = self.table is not None or self.address is not None
        if self.register_number is not None and zero_based:
            raise ValueError(
                "give either 'register' (conventional, e.g. 40001) or 'table' plus zero-based "
                "'address', not both: they never mean the same number"
            )
        if self.register_number is None and (self.table is None or self.address is None):
            raise ValueError("give 'register' (e.g. 40001) or both 'table' and 'address'")
        if self.register_number is not None:
            split_conventional_register(self.register_number)
        if self.type == "string" and self.length is None:
            raise ValueError("a 'string' tag needs 'length' (registers, two characters each)")
        if self.enum is not None and self.type not in ("int16", "uint16", "int32", "uint32",
                                                       "int64", "uint64"):
            raise ValueError("'enum' names integer values: use it with an integer type")
        table = self.location[0]
        if table in ("coil", "discrete_input") and self.type != "bool":
            raise ValueError(f"a {table} holds one bit: set type 'bool'")
        if self.bit is not None and self.type != "bool":
            raise ValueError(f"'bit' picks one bit of a register for type 'bool', not for "
                             f"'{self.type}': set type 'bool', or remove 'bit'")
        return self

    @property
    def location(self) -> tuple[ModbusTable, int]:
        if self.register_number is not None:
            return split_conventional_register(self.register_number)
        assert self.table is not None
        assert self.address is not None
        return self.table, self.address

    @property
    def width(self) -> int:
        if self.type == "string":
            assert self.length is not None
            return self.length
        return REGISTER_WIDTH[self.type]


class ModbusDeviceBase(Strict):
    id: Identifier
    unit: Annotated[int, Field(ge=0, le=255)] = Field(
        default=1, description="Unit (slave) id; several units may share one RTU line."
    )
    poll_interval: Duration = Field(default=1.0, ge=MIN_INTERVAL)
    timeout: Duration = Field(default=2.0, ge=MIN_INTERVAL, description="Per request.")
    max_backoff: Duration = Field(
        default=10.0, gt=0, le=300,
        description="Longest wait between reconnect attempts: the wait doubles from 0.5 s up "
        "to this, and starts over once data flows.",
    )
    max_gap: Annotated[int, Field(ge=0, le=124)] = Field(
        default=16, description="Unused registers a merged read may span to save a request."
    )
    tags: list[ModbusTag] = Field(min_length=1)


class ModbusTcpDevice(ModbusDeviceBase):
    protocol: Literal["modbus_tcp"]
    host: str
    port: Port = 502


class ModbusRtuDevice(ModbusDeviceBase):
    """Modbus RTU on a serial line (RS-485/RS-232). Devices naming the same `port` share
    one connection, one lock and the gap between frames."""

    protocol: Literal["modbus_rtu"]
    port: str = Field(description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = Field(default="E", description="The Modbus default is E.")
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    frame_gap: Duration = Field(
        default=0.0, ge=0, le=1,
        description="Silence enforced between frames on the line, for slow devices.",
    )


class ModbusRtuOverTcpDevice(ModbusDeviceBase):
    """RTU frames through a serial-to-Ethernet converter. Devices naming the same
    `host`:`port` share one connection, one lock and the gap between frames."""

    protocol: Literal["modbus_rtu_over_tcp"]
    host: str
    port: Port = 502
    frame_gap: Duration = Field(default=0.0, ge=0, le=1)


ModbusDevice = ModbusTcpDevice | ModbusRtuDevice | ModbusRtuOverTcpDevice


Device = Annotated[
    OpcUaDevice | ModbusTcpDevice | ModbusRtuDevice | ModbusRtuOverTcpDevice,
    Field(discriminator="protocol"),
]

# ---------------------------------------------------------------- assets

MachineState = Literal["running", "idle", "down", "setup", "planned_stop"]


class StateSignal(Strict):
    tag: TagRef
    map: dict[int, MachineState] = Field(
        min_length=1, description="PLC state code -> running | idle | down | setup | planned_stop."
    )
    min_dwell: Duration = Field(
        default=0.0, ge=0,
        description="A new state counts only once it has held this long (filters chatter).",
    )


class CounterSignals(Strict):
    good: TagRef
    scrap: TagRef | None = None
    modulus: Annotated[int, Field(ge=2)] | None = Field(
        default=None,
        description="Where the counters wrap. Default: the tag type's range, signed or "
        "not (16-bit 65536, 32-bit 2^32, 64-bit 2^64): the Modbus tag's type on every Modbus "
        "transport, the Variant type of each OPC UA value.",
    )
    on_reset: Literal["count_from_zero", "estimate", "ignore"] = Field(
        default="count_from_zero",
        description="A drop that is not a rollover: count the new value as produced since a "
        "reset to zero (exact), the same but flagged estimated, or count nothing and flag it.",
    )
    snapshot_interval: Duration | None = Field(
        default=None, gt=0, description="Send counters.snapshot with absolute values this often."
    )
    max_rate: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Parts per second the counters can never exceed: a rise beyond it since "
        "the last reading is held back (booked as nothing, flagged, alarmed). Default: ten "
        "times the fastest rate seen, at least 100 parts/s, never under 1,000 parts.",
    )


class ReasonChoice(Strict):
    """One reason an operator can pick at /line for a stop of this asset."""

    code: Annotated[int, Field(ge=1, le=2**31 - 1)] = Field(
        description="The reason's code. It maps to an Odoo loss reason through the uplink's "
        "downtime.reasons, as the PLC's codes do, so one code means one thing wherever it "
        "comes from.")
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=60)] = Field(
        description="What the button says, e.g. 'Waiting for material'.")
    group: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                            max_length=40)] | None = Field(
        default=None, description="Buttons of one group are shown together, e.g. 'Material'.")


class ReasonSignal(Strict):
    tag: TagRef | None = None
    texts: dict[int, str] = Field(default_factory=dict, description="Reason code -> text.")
    default: str = Field(default="unclassified", description="Reason when no code is known.")
    choices: list[ReasonChoice] = Field(
        default_factory=list, max_length=60,
        description="The reasons an operator can give a stop of this asset on the line page "
        "(/line), in the order shown. Without them the asset's stops are listed but cannot "
        "be classified.")

    @model_validator(mode="after")
    def _codes_once(self) -> ReasonSignal:
        seen: dict[int, str] = {}
        for choice in self.choices:
            if choice.code in seen:
                raise ValueError(f"reason code {choice.code} is in choices twice "
                                 f"('{seen[choice.code]}' and '{choice.text}'); give each "
                                 "reason its own code")
            seen[choice.code] = choice.text
            plc = self.texts.get(choice.code)
            if plc is not None and plc != choice.text:
                raise ValueError(f"reason code {choice.code} is '{plc}' in texts and "
                                 f"'{choice.text}' in choices; one code means one reason: use "
                                 "the same text, or another code")
        return self


class QualityHoldSignals(Strict):
    flag: TagRef = Field(description="Non-zero / true while the hold is active.")
    lot: TagRef | None = None
    reason: TagRef | None = None
    quantity: TagRef | None = None
    reason_texts: dict[int, str] = Field(
        default_factory=dict, description="Hold reason code -> text, when the PLC gives codes."
    )


class DowntimePolicy(Strict):
    micro_stop: Duration = Field(
        default=60.0,
        ge=0,
        description="A down state shorter than this is a micro-stop, not a downtime.",
    )
    states: list[MachineState] = Field(
        default_factory=lambda: list[MachineState](["down"]), min_length=1,
        description="States that count as down (e.g. add 'setup' to track changeovers).",
    )
    micro_stops: Literal["summarize", "report", "ignore"] = Field(
        default="summarize",
        description="summarize: count them in the next production confirmation; report: one "
        "downtime.micro_stop event each; ignore: only state changes show them.",
    )


class MaintenancePolicy(Strict):
    fault_persists: Duration | None = Field(
        default=None, gt=0, description="Request maintenance when a fault code lasts this long."
    )
    fault_repeats: Annotated[int, Field(ge=2)] | None = Field(
        default=None, description="... or when one fault code occurs this many times ..."
    )
    repeat_window: Duration = Field(default=3600.0, gt=0, description="... within this window.")


class ProductionPolicy(Strict):
    interval: Duration = Field(default=300.0, gt=0, description="Confirmation interval.")
    unit: str = "Units"
    parts_per_cycle: Annotated[int, Field(ge=1)] = 1
    shifts: list[Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]] = Field(
        default_factory=list, description="Local shift start times, 'HH:MM'; each confirms."
    )
    timezone: str = Field(default="UTC", description="IANA zone of the shift times.")
    lot: TagRef | None = Field(
        default=None,
        description="The tag holding the lot being produced (the finished goods' lot), carried "
        "on production.confirmed as `lot`. Not the quality hold's lot, which may name a "
        "raw-material lot. The Odoo uplink closes orders of lot-tracked products with it.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
        return value


class OeePolicy(Strict):
    """What OEE's performance part needs and floorlink cannot know: how fast the machine
    makes one part at best. floorlink knows no products, only work orders."""

    ideal_cycle: Duration | None = Field(
        default=None, gt=0,
        description="Seconds per part at the machine's best (per cycle: parts_per_cycle "
        "parts). Without it the page shows availability and quality, not OEE.")
    by_work_order: dict[str, Duration] = Field(
        default_factory=dict,
        description="Ideal cycle per work-order pattern ('WO-17*': 4s), first match wins; "
        "for a machine that runs products at different speeds.")


class ErpIdentifiers(Strict):
    odoo_workcenter: str | None = None
    equipment: str | None = None


class Asset(Strict):
    id: Identifier
    area: Identifier | None = None
    line: Identifier | None = None
    state: StateSignal
    counters: CounterSignals | None = None
    reason: ReasonSignal = Field(default_factory=ReasonSignal)
    quality_hold: QualityHoldSignals | None = None
    work_order: TagRef | None = None
    downtime: DowntimePolicy = Field(default_factory=DowntimePolicy)
    production: ProductionPolicy = Field(default_factory=ProductionPolicy)
    maintenance: MaintenancePolicy = Field(default_factory=MaintenancePolicy)
    oee: OeePolicy = Field(default_factory=OeePolicy)
    erp: ErpIdentifiers = Field(default_factory=ErpIdentifiers)

    def tag_references(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every tag this asset reads, with the field path that names it."""
        refs: list[tuple[tuple[str | int, ...], str]] = [(("state", "tag"), self.state.tag)]
        if self.counters:
            refs.append((("counters", "good"), self.counters.good))
            if self.counters.scrap:
                refs.append((("counters", "scrap"), self.counters.scrap))
        if self.reason.tag:
            refs.append((("reason", "tag"), self.reason.tag))
        if self.quality_hold:
            for key in ("flag", "lot", "reason", "quantity"):
                ref = getattr(self.quality_hold, key)
                if ref:
                    refs.append((("quality_hold", key), ref))
        if self.work_order:
            refs.append((("work_order",), self.work_order))
        if self.production.lot:
            refs.append((("production", "lot"), self.production.lot))
        return refs


# ---------------------------------------------------------------- buffer, uplinks, status


class BufferLimits(Strict):
    """Sizes as "512MB", "2GiB" or bytes. Fill level counts live pages, not the file."""

    size: ByteSize = Field(
        default=ByteSize(1_000_000_000),
        description="Soft limit: above it, raw telemetry is dropped, oldest first (counted).",
    )
    hard_size: ByteSize = Field(
        default=ByteSize(4_000_000_000),
        description=(
            "Hard limit: above it, business events are dropped too, oldest first, holds last, "
            "with a critical alarm. Warnings at 80% and 95%. The file never grows past it by "
            "more than 10%."
        ),
    )
    telemetry_age: Duration = Field(
        default=7 * 86400.0, ge=0,
        description="Raw telemetry older than this is dropped (0: keep until a size limit).",
    )
    reserve: ByteSize = Field(
        default=ByteSize(16_000_000),
        description=(
            "Disk space set aside beside the buffer (buffer.db.reserve) while the disk has "
            "room. When the disk fills up, it is released so that the oldest telemetry can "
            "be dropped and business events keep fitting; it is taken again when space "
            "returns. 0: none."
        ),
    )

    def to_limits(self) -> Limits:
        from buffer.retention import Limits  # the settings stay importable without SQLite

        return Limits(int(self.size), int(self.hard_size), self.telemetry_age,
                      int(self.reserve))

    @model_validator(mode="after")
    def _hard_above_soft(self) -> BufferLimits:
        if self.hard_size < self.size:
            hard, soft = (self.hard_size.human_readable(decimal=True),
                          self.size.human_readable(decimal=True))
            raise ValueError(f"hard_size ({hard}) must be at least size ({soft}): "
                             "telemetry goes first, business events last")
        if self.hard_size < 1_000_000:
            raise ValueError("hard_size below 1MB leaves no room to buffer an outage")
        if 0 < self.reserve < 8_000_000:
            raise ValueError("reserve must be 0 or at least 8MB: twice what the buffer's "
                             "write-ahead log may hold between checkpoints (4 MB)")
        return self


class BufferSettings(Strict):
    path: Path = Field(
        default=Path("/var/lib/floorlink/buffer.db"),
        description="SQLite file; relative paths are relative to the config file.",
    )
    synchronous: Literal["full", "normal"] = Field(
        default="full",
        description=(
            "full: every commit reaches the disk before it counts (safe on power loss). "
            "normal: faster, may lose the last commits on power loss, never corrupts."
        ),
    )
    commit_interval: Duration = Field(
        default=0, ge=0, le=1,
        description=(
            "How long the writer waits after a sample before it commits, gathering more "
            "into the same transaction. 0: commit at once; what arrives while a commit is "
            "on its way to the disk shares the next one, so commits per second fall as "
            "load rises. A few tens of ms mean fewer commits (fsyncs) on flash that wears, "
            "and that much more latency for every event."
        ),
    )
    limits: BufferLimits = Field(default_factory=BufferLimits)


class TelemetrySettings(Strict):
    events: Literal["per_tag", "batch"] = Field(
        default="per_tag",
        description=(
            "per_tag: one floorlink.telemetry.v1 event per published value, on a topic of "
            "its own. batch: one floorlink.telemetry.batch.v1 event per device (or asset) "
            "and derivation step, holding up to 500 values, each with its own time: the "
            "same values for a fraction of the events, rows and messages; choose it past a "
            "few hundred changing tags. Changing it needs a restart."
        ),
    )


MAX_TOPIC_BYTES = 65_535  # MQTT: a UTF-8 string with a two-byte length
# {type_path} is the type with '/' for '.' (downtime/started): NATS, whose subjects use
# '.' as their separator, drops a client that publishes to a topic holding one.
TOPIC_PLACEHOLDERS = ("site", "agent", "area", "line", "asset", "type", "type_path", "lane")


class MqttUplink(BrokerConnection):
    id: Identifier
    type: Literal["mqtt"]
    events: EventFilter = Field(default_factory=lambda: ["*"])
    state_topic: str | None = Field(
        default=None,
        description=(
            "If set, each asset's current state is also published retained here, so a "
            "dashboard that connects late sees the state now, e.g. "
            "'floorlink/{site}/{area}/{line}/{asset}/state'."
        ),
    )
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    topic: str = Field(
        default="floorlink/{site}/{asset}/{type}",
        description="Placeholders: " + ", ".join("{" + p + "}" for p in TOPIC_PLACEHOLDERS),
    )
    status_topic: str = "floorlink/{site}/{agent}/status"
    qos: Literal[1, 2] = 1
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=20, description="Unacknowledged messages on the wire; 20-100 is the sweet spot."
    )
    max_rate: Annotated[float, Field(ge=0)] = Field(
        default=10000,
        description=(
            "Events per second at most, so replay after an outage does not flood the broker "
            "(quality holds never wait). 0: unlimited."
        ),
    )

    @field_validator("topic", "status_topic", "state_topic")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return value
        unknown = sorted(set(re.findall(r"\{([^}]*)\}", value)) - set(TOPIC_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}}; use "
                + ", ".join("{" + p + "}" for p in TOPIC_PLACEHOLDERS)
            )
        if "#" in value or "+" in value:
            raise ValueError("a publish topic cannot contain the wildcards '#' or '+'")
        # Each of these was measured against Mosquitto as silent loss or a connection loop.
        if not value:
            raise ValueError("a topic cannot be empty (every event would be refused); e.g. "
                             "'floorlink/{site}/{asset}/{type}'")
        if "\0" in value:
            raise ValueError("a topic cannot contain a NUL character: the broker drops the "
                             "connection on every publish")
        if value.startswith("$"):
            raise ValueError("topics starting with '$' belong to the broker ($SYS/...): it "
                             "acknowledges publishes there and no subscriber ever gets them")
        if len(value.encode("utf-8")) > MAX_TOPIC_BYTES:
            raise ValueError(f"a topic is at most {MAX_TOPIC_BYTES:,} bytes (MQTT's limit)")
        return value


class BearerAuth(Strict):
    type: Literal["bearer"]
    token: SecretStr


class BasicAuth(Strict):
    type: Literal["basic"]
    username: str
    password: SecretStr


HttpAuth = Annotated[BearerAuth | BasicAuth, Field(discriminator="type")]


class HttpBatch(Strict):
    max_events: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=100, description="1 posts every event on its own (application/cloudevents+json)."
    )
    max_bytes: ByteSize = Field(default=ByteSize(1_000_000), ge=1000)
    linger: Duration = Field(
        default=0.2, ge=0, le=10, description="How long a batch waits to fill up."
    )


class HttpsUplink(Strict):
    """POSTs CloudEvents to middleware or a webhook, signed per Standard Webhooks."""

    id: Identifier
    type: Literal["https"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] = Field(
        description="http:// is accepted for loopback tests; plants should use https://."
    )
    events: EventFilter = Field(default_factory=lambda: ["*"])
    tls: TlsSettings | None = None
    auth: HttpAuth | None = None
    signing_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Standard Webhooks secret ('whsec_' + base64, or any text): adds webhook-id, "
            "webhook-timestamp and webhook-signature headers."
        ),
    )
    batch: HttpBatch = Field(default_factory=HttpBatch)
    timeouts: HttpTimeouts = Field(default_factory=HttpTimeouts)
    backoff: HttpBackoff = Field(
        default_factory=HttpBackoff,
        description="Retry waits for 408, 429 without Retry-After, 5xx and network errors.",
    )
    max_inflight: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=1000, description="Events handed to the sender and not yet answered."
    )
    max_rate: Annotated[float, Field(ge=0)] = Field(
        default=5000, description="Events per second at most (quality holds never wait)."
    )


Uplink = Annotated[MqttUplink | HttpsUplink | OdooUplink | SparkplugUplink,
                   Field(discriminator="type")]


class StatusSettings(Strict):
    enabled: bool = True
    bind: str = Field(default="127.0.0.1", description="Loopback unless you mean otherwise.")
    port: Port = 8080
    credentials_file: Path | None = Field(
        default=None,
        description="Required when `bind` is not a loopback address: a file of "
                    "`user:password` lines (readable by the service alone, e.g. a systemd "
                    "credential). Browsers log in with the form at /login; Prometheus and "
                    "curl with basic auth.")
    operators_file: Path | None = Field(
        default=None,
        description="Turns on the operators' page (/line), where the people at the line "
                    "classify stops: a file of `person:PIN:assets` lines (PIN or badge number "
                    "of at least 4 characters, unique; assets comma-separated, or *). "
                    "Readable by the service alone. See docs/operators.md.")

    @model_validator(mode="after")
    def _outside_needs_credentials(self) -> StatusSettings:
        if not self.enabled:
            return self
        if not _is_loopback(self.bind) and self.credentials_file is None:
            raise ValueError(
                f"status.bind is {self.bind}, reachable from the network: set "
                "status.credentials_file to a file of `user:password` lines, or bind 127.0.0.1")
        return self  # the file itself is read when the agent starts, and by check-config


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to may be reachable


def _default_agent_id() -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()).strip("-")
    return cleaned[:64] or "floorlink"


class AgentSettings(Strict):
    id: Identifier = Field(
        default_factory=_default_agent_id,
        description="Defaults to the host name. Appears in event sources and the MQTT client id.",
    )


class Config(BaseSettings):
    """floorlink configuration. Values may be overridden by FLOORLINK_<SECTION>__<KEY>."""

    model_config = SettingsConfigDict(
        env_prefix="FLOORLINK_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        title="floorlink configuration",
    )

    site: Identifier
    agent: AgentSettings = Field(default_factory=AgentSettings)
    devices: list[Device] = Field(min_length=1)
    assets: list[Asset] = Field(default_factory=list)
    buffer: BufferSettings = Field(default_factory=BufferSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    uplinks: list[Uplink] = Field(default_factory=list)
    status: StatusSettings = Field(default_factory=StatusSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML (passed as init values); no .env magic.
        return env_settings, init_settings

    def device(self, device_id: str) -> OpcUaDevice | ModbusDevice:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def config_json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://floorlink.dev/schemas/config.schema.json"
    return schema
