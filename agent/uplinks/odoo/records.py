"""Plant events as Odoo records: the rows handed to `load()`.

Every record carries the external id `__floorlink__.<kind>_<event id>`: `load()`
upserts by external id in one transaction, so sending a row twice (a retry after
a lost answer, a replay) updates the same record and never makes a second one.
Dates go as naive UTC `YYYY-MM-DD HH:MM:SS`, with context `tz: UTC`, because
`load()` would otherwise read them in the API user's time zone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MODULE = "__floorlink__"
LOAD_CONTEXT = {"tz": "UTC"}


@dataclass(frozen=True)
class Load:
    """One row for `model.load(fields, [row])`."""

    model: str
    fields: tuple[str, ...]
    row: tuple[str, ...]

    @property
    def xmlid(self) -> str:
        return self.row[0]

    @property
    def shape(self) -> tuple[str, tuple[str, ...]]:
        """Rows of one shape can share a load() call."""
        return self.model, self.fields


def external_id(kind: str, event_id: str) -> str:
    return f"{MODULE}.{kind}_{event_id.replace('-', '')}"


def odoo_datetime(text: str) -> str:
    """RFC 3339 from the event ('2026-11-23T08:00:00.250Z') as Odoo takes it: no T,
    no Z, no fractions (load() refuses each of them)."""
    moment = datetime.fromisoformat(text).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def odoo_date(epoch: float, days_later: int = 0) -> str:
    return (datetime.fromtimestamp(epoch, UTC) + timedelta(days=days_later)).strftime("%Y-%m-%d")


def make_load(model: str, pairs: list[tuple[str, Any]]) -> Load:
    fields = tuple(name for name, _ in pairs)
    row = tuple("" if value is None else str(value) for _, value in pairs)
    return Load(model, fields, row)


def downtime_line(event_id: str, data: dict[str, Any], *, workcenter: int, company: int | None,
                  loss: str, closed: bool) -> Load:
    """A `mrp.workcenter.productivity` line. The started and ended events write the
    same external id (the downtime id); the end row repeats every field, so the line
    is right even when the start never reached Odoo.

    An operator's classification (downtime.classified) writes the same line again with
    the loss its code maps to, over the time it covers. The second part of a split stop
    is a line of its own, under the derived id `dt_<downtime id>_2`: the first line is
    shortened to the split and the second covers the rest, so the two add up to the
    stop. Each row carries every field, so any order of arrival ends the same."""
    downtime_id = str(data.get("downtime_id") or event_id)
    reason = str(data.get("reason") or "unclassified")
    part = data.get("part") if data.get("parts") == 2 else None
    description = f"{reason} (floorlink downtime {downtime_id}"
    if part is not None:
        description += f", part {part} of 2"
    if data.get("classified_by"):
        description += f", reason given by {data['classified_by']} at the line"
    if data.get("work_order"):
        description += f", work order {data['work_order']}"
    description += ")"
    xmlid = external_id("dt", downtime_id) + ("_2" if part == 2 else "")
    pairs: list[tuple[str, Any]] = [
        ("id", xmlid),
        ("workcenter_id/.id", workcenter),
        ("loss_id/id", loss),
        ("date_start", odoo_datetime(str(data["started_at"]))),
        ("description", description),
    ]
    if company is not None:
        pairs.append(("company_id/.id", company))
    if closed:
        pairs.append(("date_end", odoo_datetime(str(data["ended_at"]))))
    return make_load("mrp.workcenter.productivity", pairs)


def maintenance_request(event_id: str, asset: str, data: dict[str, Any], time: float, *,
                        equipment: int, team: int | None, priority: str) -> Load:
    reason = str(data.get("reason") or f"fault {data.get('fault_code')}")
    lines = [f"Requested by floorlink for asset {asset}: {reason}.",
             f"Fault code {data.get('fault_code')}, seen {data.get('occurrences')} time(s) "
             f"since {data.get('first_seen')}.",
             f"Work order: {data.get('work_order') or '-'}. Event {event_id}."]
    pairs: list[tuple[str, Any]] = [
        ("id", external_id("mr", event_id)),
        ("name", f"{asset}: {reason}"),
        ("maintenance_type", "corrective"),
        ("description", "".join(f"<p>{html.escape(line)}</p>" for line in lines)),
        ("priority", priority),
        ("request_date", odoo_date(time)),
        ("equipment_id/.id", equipment),
    ]
    if team is not None:
        # Over the API, Odoo puts the company's first team, not the equipment's.
        pairs.append(("maintenance_team_id/.id", team))
    return make_load("maintenance.request", pairs)


def hold_text(asset: str, data: dict[str, Any]) -> list[str]:
    return [f"Quality hold raised by floorlink on asset {asset}.",
            f"Reason: {data.get('reason') or 'not given'}.",
            f"Quantity: {data.get('quantity') if data.get('quantity') is not None else '-'}; "
            f"work order: {data.get('work_order') or '-'}.",
            f"Hold {data.get('hold_id')}."]


def hold_activity(hold_id: str, asset: str, data: dict[str, Any], time: float, *, lot: int,
                  activity_type: str, deadline_days: int, assignee: int | None) -> Load:
    pairs: list[tuple[str, Any]] = [
        ("id", external_id("hold", hold_id)),
        ("res_model_id/id", "stock.model_stock_lot"),
        ("res_id", lot),
        ("activity_type_id/id", activity_type),
        ("summary", f"Quality hold: {data.get('lot')}"),
        ("note", "".join(f"<p>{html.escape(line)}</p>" for line in hold_text(asset, data))),
        ("date_deadline", odoo_date(time, deadline_days)),
    ]
    if assignee is not None:
        pairs.append(("user_id/.id", assignee))
    return make_load("mail.activity", pairs)


def quality_alert(hold_id: str, asset: str, data: dict[str, Any], *, lot: int,
                  product: int | None, workcenter: int | None) -> Load:
    pairs: list[tuple[str, Any]] = [
        ("id", external_id("qa", hold_id)),
        ("name", f"Quality hold: {data.get('lot')} ({data.get('reason') or 'no reason'})"),
        ("lot_id/.id", lot),
        ("description", "".join(f"<p>{html.escape(x)}</p>" for x in hold_text(asset, data))),
    ]
    if product is not None:
        pairs.append(("product_id/.id", product))
    if workcenter is not None:
        pairs.append(("workcenter_id/.id", workcenter))
    return make_load("quality.alert", pairs)


def quality_alert_done(hold_id: str, stage: str) -> Load:
    return make_load("quality.alert", [("id", external_id("qa", hold_id)),
                                       ("stage_id/id", stage)])


def explain_load(load: Load, messages: list[dict[str, Any]], database: str) -> str:
    """What Odoo said about a refused row, whole, and what to do about it."""
    texts = list(dict.fromkeys(str(m.get("message", "")).strip() for m in messages))
    said = "; ".join(t for t in texts if t) or "no reason given"
    hint = ""
    if "not allowed" in said:
        hint = "Give the API user the access right named above (docs/odoo.md lists them)."
    elif "No matching record found for external id" in said:
        hint = "Create that record in Odoo or correct the external id in the uplink's mapping."
    elif "configure the sender's email address" in said:
        hint = ("The activity is assigned to another user, so Odoo notifies them by email from "
                "the API user: give the API user an email address (Settings > Users).")
    return sentence(f"Odoo database '{database}' refused {load.model} record {load.xmlid}: "
                    f"{said}") + (f" {hint}" if hint else "")


def sentence(text: str) -> str:
    """`text` ending in exactly one full stop (Odoo's messages often bring their own)."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."
