"""The Odoo uplink: takes events in order, writes each as Odoo records, and
acknowledges an event only once Odoo has answered for it.

Rows of one shape that follow each other (a run of downtime lines, say) share one
`load()` call of up to `batch_rows`. `load()` is all-or-nothing and reports bad
rows in `messages`, not as a fault; the rows it names are dead-lettered with its
explanation and the rest are sent again, so one bad row never holds back the
good ones.

What Odoo's answers mean here:

* network errors, timeouts, 408/409/429/502/503/504, serialization failures and
  the login cool-down: the same call again, with backoff. Every write is an
  idempotent upsert or an absolute value, so repeating one is harmless;
* refused credentials (wrong, expired or revoked API key): the whole uplink
  pauses with an alarm and tries to log in again every `recheck`;
* ValidationError, UserError, AccessError, MissingError, or a work center, lot,
  order or equipment that does not exist: the event becomes a dead letter that
  says what to fix in Odoo. Replay it once fixed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from buffer import StoredEvent

from ...errors import UplinkRejected
from ...events import short_type
from ...settings.models import Asset, Config
from ...settings.odoo import DowntimeMapping, OdooUplink, ProductionMapping
from ...shared import backoff_delay
from ..base import UplinkHealth
from . import records
from .holds import ReleasedHolds, release_activity
from .lookups import Lookups
from .production import Orders
from .records import LOAD_CONTEXT, Load
from .rpc import OdooClient, OdooCredentials, OdooRefused, OdooTransient, connect, http_client

log = logging.getLogger("floorlink.odoo")

Step = Callable[[], Awaitable[str]]
Plan = Load | Step | str  # a row to load, a sequence of calls, or why nothing is written
RETRY_CAP = 60.0


@dataclass
class Pending:
    event: StoredEvent
    future: asyncio.Future[None]
    plan: Plan | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0

    @property
    def settled(self) -> bool:
        return self.future.done()

    def succeed(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def refuse(self, message: str, answer: str | None) -> None:
        if not self.future.done():
            self.future.set_exception(UplinkRejected(message, answer=answer))


class OdooConnector:
    def __init__(self, settings: OdooUplink, config: Config) -> None:
        self.id = settings.id
        self.settings = settings
        self.health = UplinkHealth(settings.id, "odoo", f"{settings.url} ({settings.database})")
        self._assets = {asset.id: asset for asset in config.assets}
        self._pending: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._client: OdooClient | None = None
        self._lookups: Lookups | None = None
        self._orders: Orders | None = None
        self.released = ReleasedHolds(Path(config.buffer.path).parent / f"odoo-{settings.id}.db")
        self._trouble_logged = False
        self._warned_no_order: set[str] = set()

    async def start(self) -> None:
        if self.settings.url.startswith("http://"):
            log.warning("uplink %s talks to Odoo at %s without TLS: the API key crosses the "
                        "network in clear; use https:// outside a lab", self.id, self.settings.url)
        if self.settings.tls is not None and self.settings.tls.insecure:
            log.warning("uplink %s: TLS certificate verification is OFF (tls.insecure)", self.id)
        await self.released.open()
        self._http = http_client(self.settings)
        self._task = asyncio.get_running_loop().create_task(self._work_forever(),
                                                            name=f"odoo {self.id}")

    def submit(self, event: StoredEvent) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(Pending(event, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    # ------------------------------------------------------------ the work loop

    async def _work_forever(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.login_check):
                    await self._wakeup.wait()
            except TimeoutError:
                # Idle: prove the key still works, so an expired or revoked one raises the
                # alarm now and not when the next downtime needs it.
                await self._until_answered(self._login_again)
                continue
            self._wakeup.clear()
            while self._pending:
                head = self._pending[0]
                if not head.settled:
                    await self._plan(head)
                if head.settled:
                    self._pending.popleft()
                elif isinstance(head.plan, Load):
                    await self._run_loads()
                else:
                    self._pending.popleft()
                    await self._run_single(head)

    async def _run_single(self, entry: Pending) -> None:
        plan = entry.plan
        if isinstance(plan, str):
            log.debug("uplink %s: event %s needs nothing in Odoo: %s", self.id, entry.event.id,
                      plan, extra={"event_id": entry.event.id, "uplink": self.id})
            entry.succeed()
            return
        assert plan is not None
        assert not isinstance(plan, Load)
        try:
            outcome = await self._until_answered(plan)
        except OdooRefused as exc:
            entry.refuse(str(exc), exc.answer)
            return
        log.info("uplink %s: %s %s: %s", self.id, short_type(entry.event.type), entry.event.id,
                 outcome, extra={"event_id": entry.event.id, "uplink": self.id})
        entry.succeed()

    async def _run_loads(self) -> None:
        """The head is a row to load: gather the rows of the same shape behind it."""
        limit = self.settings.batch_rows
        if limit > 1 and len(self._pending) < limit and self.settings.linger:
            await asyncio.sleep(self.settings.linger)  # let a batch fill
        head = self._pending[0]
        assert isinstance(head.plan, Load)
        batch, xmlids = [head], {head.plan.xmlid}
        for entry in list(self._pending)[1:]:
            if len(batch) >= limit:
                break
            if not entry.settled and entry.plan is None:
                await self._plan(entry)
            if entry.settled:
                continue
            plan = entry.plan
            # The same record twice in one call would be ambiguous: it waits for the next.
            if (not isinstance(plan, Load) or plan.shape != head.plan.shape
                    or plan.xmlid in xmlids):
                break
            batch.append(entry)
            xmlids.add(plan.xmlid)
        taken = {id(entry) for entry in batch}
        while taken and self._pending:
            entry = self._pending.popleft()
            taken.discard(id(entry))
        await self._load(batch)

    async def _load(self, batch: list[Pending]) -> None:
        loads = [entry.plan for entry in batch]
        assert all(isinstance(load, Load) for load in loads)
        first = loads[0]
        assert isinstance(first, Load)
        try:
            answer = await self._until_answered(lambda: self._call_load(
                first.model, list(first.fields), [list(load.row) for load in loads
                                                  if isinstance(load, Load)]))
        except OdooRefused as exc:  # the whole call refused (a fault, not messages)
            if len(batch) == 1:
                batch[0].refuse(str(exc), exc.answer)
                return
            middle = len(batch) // 2
            await self._load(batch[:middle])
            await self._load(batch[middle:])
            return
        ids, messages = answer.get("ids"), answer.get("messages") or []
        errors = [m for m in messages if m.get("type") == "error"]
        if ids and not errors:
            for entry in batch:
                entry.succeed()
            log.debug("uplink %s: %s.load wrote %d record(s)", self.id, first.model, len(batch))
            return
        bad = _rows_named(errors, len(batch))
        if len(batch) == 1:
            bad = {0}
        elif not bad:
            middle = len(batch) // 2  # Odoo said no without saying which row: halve
            await self._load(batch[:middle])
            await self._load(batch[middle:])
            return
        for index in sorted(bad):
            entry = batch[index]
            load = entry.plan
            assert isinstance(load, Load)
            mine = [m for m in errors if index in _rows_of(m)] or errors
            entry.refuse(records.explain_load(load, mine, self.settings.database),
                         json.dumps(mine, ensure_ascii=False)[:1000])
        rest = [entry for index, entry in enumerate(batch) if index not in bad]
        if rest:
            await self._load(rest)  # all-or-nothing: the good rows were not written

    async def _call_load(self, model: str, fields: list[str],
                         rows: list[list[str]]) -> dict[str, Any]:
        client = await self._ready()
        answer = await client.call(model, "load", fields=fields, data=rows,
                                   context=dict(LOAD_CONTEXT))
        if not isinstance(answer, dict):
            raise OdooRefused(f"Odoo {model}.load answered {str(answer)[:80]!r}, not a result")
        return answer

    # ------------------------------------------------------------ retries and pausing

    async def _ready(self) -> OdooClient:
        if self._client is None:
            assert self._http is not None
            try:
                self._client = client = await connect(self.settings, self._http)
            except OdooRefused as exc:
                # Until floorlink is logged in, no event can be judged: pause, do not refuse.
                raise OdooCredentials(
                    f"cannot log in to Odoo at {self.settings.url}, database "
                    f"'{self.settings.database}' (check url and database): {exc}",
                    exc.answer) from exc
            self._lookups = Lookups(client, self.settings.database)
            self._orders = Orders(client, self.settings.database)
            self.health.details = {"protocol": client.protocol, "uid": client.uid,
                                   "server_version": client.server_version}
            log.info("uplink %s: logged in to Odoo at %s, database %s, over %s", self.id,
                     self.settings.url, self.settings.database, client.protocol)
        return self._client

    async def _login_again(self) -> None:
        if self._client is None:
            await self._ready()  # logs in
        else:
            await self._client.login()
        log.debug("uplink %s: Odoo still accepts the API key", self.id)

    async def _until_answered(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """Run `attempt` until Odoo answers it: transient failures wait and repeat,
        refused credentials pause the uplink; an OdooRefused goes to the caller."""
        failures = 0
        while True:
            try:
                await self._ready()
                result = await attempt()
            except OdooTransient as exc:
                self._trouble(str(exc))
                wait = exc.retry_after if exc.retry_after is not None else backoff_delay(
                    failures, self.settings.backoff.initial, self.settings.backoff.max)
                failures += 1
                await asyncio.sleep(min(wait, RETRY_CAP))
                continue
            except OdooCredentials as exc:
                await self._pause(exc)
                continue
            except OdooRefused:
                self._answered()  # a refusal of this call: Odoo took the key
                raise
            self._answered()
            return result

    async def _pause(self, exc: OdooCredentials) -> None:
        message = f"{exc}; events stay buffered, next try in {self.settings.recheck:g}s"
        if self.health.alarm != message:
            log.error("uplink %s PAUSED: %s", self.id, message)
        self.health.alarm = message
        self.health.last_error = str(exc)
        if self.health.connected:
            self.health.connected, self.health.since = False, time.time()
            self.health.disconnects += 1
        await asyncio.sleep(self.settings.recheck)
        if self._client is not None:
            self._client.uid = None  # log in again on the next call

    def _trouble(self, message: str) -> None:
        self.health.last_error = message
        if self.health.connected or not self._trouble_logged:
            log.warning("uplink %s: %s; retrying (events stay buffered)", self.id, message)
            self._trouble_logged = True
        if self.health.connected:
            self.health.connected, self.health.since = False, time.time()
            self.health.disconnects += 1

    def _answered(self) -> None:
        self.health.credentials_accepted_at = time.time()
        if self.health.alarm is not None:
            log.info("uplink %s: Odoo accepts the API key again; resuming", self.id)
            self.health.alarm = None
        if not self.health.connected:
            if self._trouble_logged:
                log.info("uplink %s: Odoo at %s answering again", self.id, self.settings.url)
            self.health.connected, self.health.since = True, time.time()
            self.health.last_error = None  # what kept it away is over
            self._trouble_logged = False

    # ------------------------------------------------------------ planning

    async def _plan(self, entry: Pending) -> None:
        """Decide what the event becomes in Odoo; lookups may refuse it on their own."""
        body = json.loads(entry.event.body)
        entry.data = body.get("data") or {}
        entry.time = _epoch(body.get("time"))
        try:
            entry.plan = await self._until_answered(lambda: self._plan_for(entry))
        except OdooRefused as exc:
            entry.refuse(str(exc), exc.answer)

    async def _plan_for(self, entry: Pending) -> Plan:
        kind = short_type(entry.event.type)
        asset_id = entry.event.subject
        data = entry.data
        mapping = self.settings.assets.get(asset_id)
        asset = self._assets.get(asset_id)
        assert self._lookups is not None
        assert self._client is not None
        if kind in ("downtime.started", "downtime.ended", "downtime.classified"):
            rules = (mapping.downtime if mapping and mapping.downtime else self.settings.downtime)
            closed = kind == "downtime.ended" or (
                kind == "downtime.classified" and data.get("ended_at") is not None)
            if not closed and rules.mode == "closed":
                return ("downtime mode 'closed' writes the line when the downtime ends "
                        "(with an operator's reason, if one was given)")
            workcenter = await self._lookups.workcenter(
                _required_name(self.settings, asset_id, asset, "workcenter"), asset_id)
            return records.downtime_line(
                entry.event.id, data, workcenter=workcenter.id,
                company=workcenter.many2one("company_id"), loss=_loss(rules, data),
                closed=closed)
        if kind == "production.confirmed":
            return self._production_step(entry, asset_id, mapping.production
                                         if mapping and mapping.production
                                         else self.settings.production)
        if kind == "quality.hold_raised":
            return await self._hold_raise(entry, asset_id, asset)
        if kind == "quality.hold_released":
            return self._hold_release(entry)
        if kind == "maintenance.requested":
            equipment = await self._lookups.equipment(
                _required_name(self.settings, asset_id, asset, "equipment"), asset_id)
            team = equipment.many2one("maintenance_team_id")
            if self.settings.maintenance.team:
                team = (await self._lookups.team(self.settings.maintenance.team)).id
            return records.maintenance_request(
                entry.event.id, asset_id, data, entry.time, equipment=equipment.id, team=team,
                priority=self.settings.maintenance.priority)
        return f"{kind} has no Odoo record"

    def _production_step(self, entry: Pending, asset_id: str, rules: ProductionMapping) -> Plan:
        data = entry.data
        work_order = data.get("work_order")
        if not work_order:
            if asset_id not in self._warned_no_order:
                log.warning("uplink %s: production of asset %s carries no work order, so it "
                            "cannot go to a manufacturing order; give the asset a work_order "
                            "tag", self.id, asset_id)
                self._warned_no_order.add(asset_id)
            self.health.skipped += 1
            return "no work order on the confirmation"
        close = rules.mark_done and data.get("trigger") == "work_order_change"
        orders = self._orders
        assert orders is not None
        lot = str(data["lot"]) if data.get("lot") else None
        asset = self._assets.get(asset_id)
        if asset is not None and asset.production.lot:
            no_lot = (f"The lot tag {asset.production.lot} of asset '{asset_id}' was empty when "
                      "the order closed: the PLC must hold the finished lot's name there.")
        else:
            no_lot = (f"Asset '{asset_id}' maps no production.lot tag: map the PLC tag that "
                      "holds the lot being produced (assets[].production.lot), or set the lot "
                      "on the order in Odoo and replay this dead letter.")
        return lambda: orders.confirm(str(work_order), float(data.get("good_total") or 0),
                                      close, rules.backorder, lot, no_lot)

    async def _hold_raise(self, entry: Pending, asset_id: str, asset: Asset | None) -> Plan:
        data = entry.data
        hold_id = str(data.get("hold_id") or entry.event.id)
        if hold_id in self.released:
            return "hold already released in Odoo; raising it again would re-open it"
        if not data.get("lot"):
            raise OdooRefused(f"quality hold {hold_id} of asset '{asset_id}' names no lot; "
                              "give the asset a quality_hold.lot tag so the hold lands on a lot")
        assert self._lookups is not None
        lot = await self._lookups.lot(str(data["lot"]))
        quality = self.settings.quality
        if quality.mode == "quality_alert":
            workcenter = None
            if asset is not None and asset.erp.odoo_workcenter:
                workcenter = (await self._lookups.workcenter(asset.erp.odoo_workcenter,
                                                             asset_id)).id
            return records.quality_alert(hold_id, asset_id, data, lot=lot.id,
                                         product=lot.many2one("product_id"),
                                         workcenter=workcenter)
        assignee = (await self._lookups.user(quality.assignee)).id if quality.assignee else None
        return records.hold_activity(hold_id, asset_id, data, entry.time, lot=lot.id,
                                     activity_type=quality.activity_type,
                                     deadline_days=quality.deadline_days, assignee=assignee)

    def _hold_release(self, entry: Pending) -> Plan:
        hold_id = str(entry.data.get("hold_id") or entry.event.id)
        quality = self.settings.quality

        async def release() -> str:
            assert self._client is not None
            assert self._lookups is not None
            if quality.mode == "quality_alert":
                assert quality.alert_done_stage is not None
                stage = records.quality_alert_done(hold_id, quality.alert_done_stage)
                answer = await self._call_load(stage.model, list(stage.fields), [list(stage.row)])
                if not answer.get("ids"):
                    raise OdooRefused(records.explain_load(stage, answer.get("messages") or [],
                                                    self.settings.database))
                outcome = "alert moved to the done stage"
            else:
                outcome = await release_activity(
                    self._client, self._lookups, records.external_id("hold", hold_id),
                    f"Released by floorlink: {entry.data.get('reason') or 'hold cleared'}")
            await self.released.add(hold_id)
            return outcome

        return release


ERP_FIELDS = {"workcenter": ("odoo_workcenter", "work center", "code or name"),
              "equipment": ("equipment", "equipment", "name or serial number")}


def mapped_name(settings: OdooUplink, asset_id: str, asset: Asset | None,
                what: str) -> str | None:
    """The asset's Odoo work center or equipment: the uplink's override, else `erp`."""
    mapping = settings.assets.get(asset_id)
    override = getattr(mapping, what) if mapping else None
    erp = getattr(asset.erp, ERP_FIELDS[what][0]) if asset else None
    return str(override or erp) if (override or erp) else None


def _required_name(settings: OdooUplink, asset_id: str, asset: Asset | None, what: str) -> str:
    name = mapped_name(settings, asset_id, asset, what)
    if not name:
        field, label, kind = ERP_FIELDS[what]
        raise OdooRefused(f"asset '{asset_id}' has no Odoo {label}: set its erp.{field} "
                          f"(the {label}'s {kind})")
    return name


def _loss(rules: DowntimeMapping, data: dict[str, Any]) -> str:
    code = data.get("reason_code")
    if isinstance(code, int) and code in rules.reasons:
        return rules.reasons[code]
    return rules.default_loss


def _epoch(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return time.time()


def _rows_of(message: dict[str, Any]) -> set[int]:
    record = message.get("record")
    if isinstance(record, int):
        return {record}
    rows = message.get("rows") or {}
    if isinstance(rows.get("from"), int) and isinstance(rows.get("to"), int):
        return set(range(rows["from"], rows["to"] + 1))
    return set()


def _rows_named(errors: list[dict[str, Any]], size: int) -> set[int]:
    return {row for message in errors for row in _rows_of(message) if 0 <= row < size}
