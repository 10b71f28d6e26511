"""`floorlink odoo check`: log in as the agent would, and resolve everything the
mapping refers to, so a commissioning engineer sees what is missing in Odoo before
the first event is dead-lettered. It only reads."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime

from ...settings.models import Config
from ...settings.odoo import ODOO_EVENT_TYPES, OdooUplink
from .connector import mapped_name
from .lookups import Found, Lookups
from .rpc import OdooClient, OdooError, OdooRefused, connect, http_client

EX_OK, EX_MISSING, EX_UNAVAILABLE = 0, 1, 69


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str

    def render(self) -> str:
        return f"  {'ok     ' if self.ok else 'MISSING'} {self.text}"


MANUFACTURING_USER = "Manufacturing / User"
INVENTORY_USER = "Inventory / User"
INTERNAL_USER = "any internal user"
EQUIPMENT_MANAGER = "Maintenance / Equipment Manager"

# (model, operation, the Odoo group that grants it), by event family.
RIGHTS: dict[str, list[tuple[str, str, str]]] = {
    "downtime": [("mrp.workcenter", "read", MANUFACTURING_USER),
                 ("mrp.workcenter.productivity", "create", MANUFACTURING_USER),
                 ("mrp.workcenter.productivity", "write", MANUFACTURING_USER)],
    "production": [("mrp.production", "read", MANUFACTURING_USER),
                   ("mrp.production", "write", MANUFACTURING_USER)],
    "quality": [("stock.lot", "read", INVENTORY_USER),
                ("mail.activity", "create", INTERNAL_USER)],
    "maintenance": [("maintenance.equipment", "read", INTERNAL_USER),
                    ("maintenance.request", "create", INTERNAL_USER),
                    ("maintenance.request", "write", INTERNAL_USER)],
}
# Only when an asset maps production.lot: closing an order of a lot-tracked product.
LOT_RIGHTS = [("product.product", "read", INTERNAL_USER),
              ("stock.lot", "create", INVENTORY_USER)]


def _wants(settings: OdooUplink, family: str) -> bool:
    kinds = [k for k in ODOO_EVENT_TYPES if k.startswith(family)]
    return any(fnmatch.fnmatchcase(k, p) for k in kinds for p in settings.events)


async def check(config: Config, only: str | None = None) -> int:
    uplinks = [u for u in config.uplinks if isinstance(u, OdooUplink)
               and (only is None or u.id == only)]
    if not uplinks:
        print("no Odoo uplink in the configuration" + (f" with id '{only}'" if only else ""))
        return EX_MISSING
    worst = EX_OK
    for settings in uplinks:
        worst = max(worst, await _check_one(config, settings))
    return worst


async def _check_one(config: Config, settings: OdooUplink) -> int:
    print(f"Odoo uplink '{settings.id}': {settings.url}, database '{settings.database}'")
    async with http_client(settings) as http:
        try:
            client = await connect(settings, http)
        except OdooError as exc:
            print(Finding(False, f"login: {exc}").render())
            return EX_UNAVAILABLE
        version = f", Odoo {client.server_version}" if client.server_version else ""
        accepted = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        print(Finding(True, f"logged in as '{settings.username}' (uid {client.uid}) over "
                            f"{client.protocol}{version}; key accepted at {accepted} (a "
                            "non-admin user's key lasts at most 90 days in Odoo 18: note "
                            "its renewal date)").render())
        findings = [f async for f in _findings(config, settings, client)]
    for finding in findings:
        print(finding.render())
    missing = sum(not f.ok for f in findings)
    print(f"  {missing} missing" if missing else "  everything the mapping needs is there")
    return EX_MISSING if missing else EX_OK


async def _findings(config: Config, settings: OdooUplink,
                    client: OdooClient) -> AsyncIterator[Finding]:
    lookups = Lookups(client, settings.database)
    for family, rights in RIGHTS.items():
        if not _wants(settings, family):
            continue
        if family == "production" and any(a.production.lot for a in config.assets):
            rights = rights + LOT_RIGHTS
        for model, operation, group in rights:
            yield await _right(lookups, model, operation, family, group)
    for asset in config.assets:
        wanted = [("workcenter", _wants(settings, "downtime")
                   or settings.quality.mode == "quality_alert", "erp.odoo_workcenter"),
                  ("equipment", _wants(settings, "maintenance"), "erp.equipment")]
        for what, needed, field in wanted:
            if not needed:
                continue
            name = mapped_name(settings, asset.id, asset, what)
            if name is None:
                yield Finding(False, f"asset '{asset.id}' has no {what}: set {field}")
                continue
            lookup = (lookups.workcenter if what == "workcenter" else lookups.equipment)
            label = "work center" if what == "workcenter" else "equipment"
            yield await _found(lookup(name, asset.id), f"{label} '{name}' for asset '{asset.id}'")
    if _wants(settings, "downtime"):
        losses = {settings.downtime.default_loss, *settings.downtime.reasons.values()}
        for mapping in settings.assets.values():
            if mapping.downtime:
                losses |= {mapping.downtime.default_loss, *mapping.downtime.reasons.values()}
        for xmlid in sorted(losses):
            yield await _external_id(lookups, xmlid, "loss reason",
                                     "mrp.workcenter.productivity.loss")
    if _wants(settings, "quality"):
        quality = settings.quality
        if quality.mode == "activity":
            yield await _external_id(lookups, quality.activity_type, "activity type",
                                     "mail.activity.type")
            yield await _external_id(lookups, "stock.model_stock_lot", "lot model", "ir.model")
        else:
            assert quality.alert_done_stage is not None
            yield await _external_id(lookups, quality.alert_done_stage,
                                     "quality alert done stage (experimental)",
                                     "quality.alert.stage")
        if quality.assignee:
            yield await _found(lookups.user(quality.assignee),
                               f"hold assignee '{quality.assignee}'")
            if quality.mode == "activity" and quality.assignee != settings.username:
                yield await _sender_email(client, settings)
    if _wants(settings, "maintenance") and settings.maintenance.team:
        yield await _found(lookups.team(settings.maintenance.team),
                           f"maintenance team '{settings.maintenance.team}'")


async def _found(lookup: Awaitable[Found], what: str) -> Finding:
    try:
        record = await lookup
    except OdooRefused as exc:
        return Finding(False, str(exc))
    return Finding(True, f"{what} (id {record.id})")


async def _external_id(lookups: Lookups, xmlid: str, what: str, model: str) -> Finding:
    try:
        found = await lookups.external_id(xmlid)
    except OdooRefused as exc:
        return Finding(False, f"{what} {xmlid}: {exc}")
    if found is None or found[0] != model:
        return Finding(False, f"{what} {xmlid}: no {model} record has this external id; "
                              "check the module is installed and the id is spelled right")
    return Finding(True, f"{what} {xmlid} (id {found[1]})")


async def _right(lookups: Lookups, model: str, operation: str, family: str,
                 group: str) -> Finding:
    try:
        allowed = await lookups.may(model, operation)
    except OdooRefused as exc:
        return Finding(False, f"right to {operation} {model} (for {family}): {exc}")
    if allowed is None:
        return Finding(True, f"right to {operation} {model}: this Odoo cannot say; it needs "
                             f"{group}")
    if allowed:
        return Finding(True, f"right to {operation} {model}")
    return Finding(False, f"right to {operation} {model}, needed for {family} events: give the "
                          f"API user the group {group}")


async def _sender_email(client: OdooClient, settings: OdooUplink) -> Finding:
    """Odoo emails the assignee of an activity from the API user, and refuses to
    create one for another user when the API user has no email address."""
    assert client.uid is not None
    try:
        rows = await client.call("res.users", "read", [client.uid], fields=["email"])
    except OdooRefused as exc:
        return Finding(False, f"email address of '{settings.username}': {exc}")
    if rows and rows[0].get("email"):
        return Finding(True, f"'{settings.username}' has an email address, needed to assign "
                             f"holds to '{settings.quality.assignee}'")
    return Finding(False, f"'{settings.username}' has no email address: Odoo refuses to assign "
                          f"a hold's activity to '{settings.quality.assignee}' (\"Unable to "
                          "send message, please configure the sender's email address.\"); set "
                          "one in Settings > Users, or leave quality.assignee unset")
