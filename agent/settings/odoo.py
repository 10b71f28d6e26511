"""The Odoo uplink's settings: where Odoo is, who floorlink is there, and how plant
events map onto Odoo records. Every mapping default can be changed per asset."""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, StringConstraints, model_validator

from .base import EVENT_TYPES, HttpBackoff, HttpTimeouts, Identifier, Strict, TlsSettings
from .durations import Duration

# What the connector turns into Odoo records; other event types have no Odoo meaning.
ODOO_EVENT_TYPES = ("downtime.started", "downtime.ended", "downtime.classified",
                    "production.confirmed",
                    "quality.hold_raised", "quality.hold_released", "maintenance.requested")
ExternalId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_]+\.[A-Za-z0-9_.-]+$"),
    Field(description="An Odoo external id, 'module.name', e.g. 'mrp.block_reason1'."),
]


def _odoo_events(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        matched = [kind for kind in EVENT_TYPES if fnmatch.fnmatchcase(kind, pattern)]
        if not matched:
            raise ValueError(f"'{pattern}' matches no event type; the Odoo uplink maps: "
                             + ", ".join(ODOO_EVENT_TYPES))
        if not any(kind in ODOO_EVENT_TYPES for kind in matched):
            # 'downtime.*' is fine (micro-stops are passed over); 'telemetry' alone is a mistake.
            raise ValueError(f"'{pattern}' selects {', '.join(matched)}, which has no Odoo "
                             "record; the Odoo uplink maps: " + ", ".join(ODOO_EVENT_TYPES))
    return patterns


OdooEventFilter = Annotated[
    list[str],
    AfterValidator(_odoo_events),
    Field(description="Event types written to Odoo ('*' means every type Odoo can take)."),
]


def _base_url(url: str) -> str:
    """Refuse a URL that names one of Odoo's endpoints: floorlink adds the path itself."""
    match = re.search(r"/(jsonrpc|json/2|xmlrpc/2|web)(/.*)?$", url.split("://", 1)[1])
    if match:
        base = url[:len(url) - len(match.group(0))]
        raise ValueError(f"'{url}' ends in an Odoo endpoint ('{match.group(0)}'); give the "
                         f"address users open, without it: url: {base}")
    return url


class DowntimeMapping(Strict):
    mode: Literal["live", "closed"] = Field(
        default="live",
        description="live: the productivity line is opened when the downtime starts (Odoo then "
        "shows the work center blocked) and closed when it ends; closed: one line at the end.",
    )
    default_loss: ExternalId = Field(
        default="mrp.block_reason1",
        description="Loss reason for codes not in `reasons` (mrp.block_reason1: Equipment "
        "Failure).",
    )
    reasons: dict[int, ExternalId] = Field(
        default_factory=dict,
        description="PLC reason code -> external id of an mrp.workcenter.productivity.loss.",
    )


class ProductionMapping(Strict):
    mark_done: bool = Field(
        default=False,
        description="When the work order changes, mark the old manufacturing order done "
        "(button_mark_done), never while nothing was produced.",
    )
    backorder: bool = Field(
        default=True,
        description="With mark_done: what was not produced continues in a backorder.",
    )


class QualityMapping(Strict):
    mode: Literal["activity", "quality_alert"] = Field(
        default="activity",
        description="activity: a To-Do activity on the stock.lot (Community); quality_alert: "
        "a quality.alert (Odoo Quality, experimental).",
    )
    assignee: str | None = Field(
        default=None, description="Login of the user the hold is assigned to. Default: "
        "the API user.")
    deadline_days: Annotated[int, Field(ge=0, le=365)] = Field(
        default=0, description="Activity deadline, days after the hold was raised.")
    activity_type: ExternalId = "mail.mail_activity_data_todo"
    alert_done_stage: ExternalId | None = Field(
        default=None, description="quality_alert mode: the stage a released hold moves to.")

    @model_validator(mode="after")
    def _stage_for_alerts(self) -> QualityMapping:
        if self.mode == "quality_alert" and self.alert_done_stage is None:
            raise ValueError("quality_alert mode needs alert_done_stage: the external id of "
                             "the quality.alert.stage a released hold moves to")
        return self


class MaintenanceMapping(Strict):
    team: str | None = Field(
        default=None,
        description="Maintenance team name. Default: the equipment's team. (Over the API Odoo "
        "does not take it from the equipment by itself.)",
    )
    priority: Literal["0", "1", "2", "3"] = "2"


class AssetMapping(Strict):
    """Per-asset overrides; `workcenter` and `equipment` default to the asset's `erp` block."""

    workcenter: str | None = Field(default=None, description="Work center code or name.")
    equipment: str | None = Field(default=None, description="Equipment name or serial number.")
    downtime: DowntimeMapping | None = None
    production: ProductionMapping | None = None


class OdooUplink(Strict):
    """Writes plant events into Odoo as records, exactly once, over Odoo's external API."""

    id: Identifier
    type: Literal["odoo"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$"),
                   AfterValidator(_base_url)] = Field(
        description="Odoo's base URL, e.g. https://erp.example.com (no /jsonrpc)."
    )
    database: str = Field(min_length=1)
    username: str = Field(
        min_length=1, description="Login of the API user (JSON-RPC logs in with it).")
    api_key: SecretStr = Field(description="The API user's API key, never a password.")
    protocol: Literal["auto", "jsonrpc", "json2"] = Field(
        default="auto",
        description="jsonrpc: Odoo 17 and 18; json2: Odoo 19 and later; auto: asks the server.",
    )
    events: OdooEventFilter = Field(default_factory=lambda: ["*"])
    tls: TlsSettings | None = None
    timeouts: HttpTimeouts = Field(default_factory=HttpTimeouts)
    backoff: HttpBackoff = Field(default_factory=HttpBackoff)
    recheck: Duration = Field(
        default=300.0, ge=1,
        description="While paused on refused credentials, how often to try logging in again.",
    )
    login_check: Duration = Field(
        default=900.0, ge=1, le=86400,
        description="While there is nothing to send, log in again this often, so a key that "
        "expired or was revoked raises the alarm before the next event needs it.",
    )
    batch_rows: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=100, description="Records written per load() call at most.")
    linger: Duration = Field(
        default=0.2, ge=0, le=10, description="How long a load() batch waits to fill up.")
    max_inflight: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=500, description="Events handed to the connector and not yet answered.")
    max_rate: Annotated[float, Field(ge=0)] = Field(
        default=200, description="Events per second at most (quality holds never wait).")
    downtime: DowntimeMapping = Field(default_factory=DowntimeMapping)
    production: ProductionMapping = Field(default_factory=ProductionMapping)
    quality: QualityMapping = Field(default_factory=QualityMapping)
    maintenance: MaintenanceMapping = Field(default_factory=MaintenanceMapping)
    assets: dict[str, AssetMapping] = Field(
        default_factory=dict, description="Asset id -> mapping overrides.")
