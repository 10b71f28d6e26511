"""A small Odoo for tests, faithful on the wire to what ../shared/ODOO_API_NOTES.md
recorded from a real Odoo 18 server (and to Odoo 19's JSON-2 as its source reads).

It keeps records in memory and enforces the surprises the connector must survive:

* JSON-RPC is always HTTP 200; a method returning None gives no `result` key;
  faults are `error.data.name`; `common.login` answers `false` for a bad key.
* JSON-2 takes named arguments only, a bearer key and X-Odoo-Database, returns the
  bare value (None as `null`) and faults with HTTP 401/403/404/409/422/500.
* `load()` reports errors in `messages` with `ids: false`, is all-or-nothing,
  upserts by external id, reads datetimes in context tz (else the user's tz), and
  accepts no 'T', 'Z' or fractions.
* Unlinking a record (an activity marked done) drops its external id.
* `button_mark_done` returns wizards without context, produces the full quantity
  on an order with nothing producing, and renames an order closed with a backorder.
* Access rights per user group; `read` of a missing id answers [].
* Section 6, from a real Odoo 18 set up as docs/odoo.md says:
  - `has_access` without an id list fails server-side (IndexError); with `[[]]` it
    answers true or false;
  - `button_mark_done` refuses a backorder of zero or less (ValidationError), and an
    order of a lot-tracked product without `lot_producing_id` (UserError, naming the
    product on the message's second line);
  - `ir.model.data` may be read only with Administration / Access Rights, while
    `check_object_reference` answers any user;
  - an internal user without Maintenance / Equipment Manager finds only the equipment
    it follows (an empty search, not an error);
  - an activity assigned to another user is refused in `load()`'s messages when the
    API user has no email address.

A test can make it commit a call and then drop the connection (`drop_after`),
expire a key, or turn on the login cool-down.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from conftest import free_port


class Fault(Exception):
    def __init__(self, name: str, message: str, status: int) -> None:
        super().__init__(message)
        self.name, self.message, self.status = name, message, status


def user_error(message: str) -> Fault:
    return Fault("odoo.exceptions.UserError", message, 422)


def validation_error(message: str) -> Fault:
    return Fault("odoo.exceptions.ValidationError", message, 422)


def access_error(message: str) -> Fault:
    return Fault("odoo.exceptions.AccessError", message, 403)


def missing_error(model: str, ids: list[int], uid: int) -> Fault:
    return Fault("odoo.exceptions.MissingError",
                 "Record does not exist or has been deleted.\n"
                 f"(Record: {model}({','.join(map(str, ids))},), User: {uid})", 404)


ACCESS_DENIED = Fault("odoo.exceptions.AccessDenied", "Access Denied", 403)


@dataclass(frozen=True)
class F:
    """A field: its type, label, required flag, comodel or selection."""

    type: str
    label: str
    required: bool = False
    comodel: str | None = None
    selection: tuple[str, ...] = ()


MODELS: dict[str, dict[str, F]] = {
    "res.company": {"name": F("char", "Company Name", True)},
    "res.users": {"name": F("char", "Name", True), "login": F("char", "Login", True),
                  "tz": F("char", "Timezone"), "email": F("char", "Email")},
    "ir.model": {"model": F("char", "Model", True), "name": F("char", "Model Description")},
    "mail.activity.type": {"name": F("char", "Name", True)},
    "mrp.workcenter": {"name": F("char", "Work Center", True), "code": F("char", "Code"),
                       "company_id": F("many2one", "Company", comodel="res.company")},
    "mrp.workcenter.productivity.loss": {"name": F("char", "Blocking Reason", True)},
    "mrp.workcenter.productivity": {
        "workcenter_id": F("many2one", "Work Center", True, "mrp.workcenter"),
        "loss_id": F("many2one", "Loss Reason", True, "mrp.workcenter.productivity.loss"),
        "date_start": F("datetime", "Start Date", True),
        "date_end": F("datetime", "End Date"),
        "company_id": F("many2one", "Company", True, "res.company"),
        "description": F("text", "Description"),
    },
    "mrp.production": {"name": F("char", "Reference", True), "state": F("char", "State"),
                       "product_qty": F("float", "Quantity To Produce"),
                       "qty_producing": F("float", "Quantity Producing"),
                       "qty_produced": F("float", "Quantity Produced"),
                       "backorder_sequence": F("integer", "Backorder Sequence"),
                       "product_id": F("many2one", "Product", comodel="product.product"),
                       "lot_producing_id": F("many2one", "Lot/Serial Number",
                                             comodel="stock.lot")},
    "product.product": {"name": F("char", "Name", True),
                        "default_code": F("char", "Internal Reference"),
                        "tracking": F("selection", "Tracking",
                                      selection=("serial", "lot", "none"))},
    "stock.lot": {"name": F("char", "Lot/Serial Number", True),
                  "product_id": F("many2one", "Product", True, "product.product"),
                  "company_id": F("many2one", "Company", comodel="res.company")},
    "mail.activity": {
        "res_model_id": F("many2one", "Document Model", True, "ir.model"),
        "res_id": F("integer", "Related Document ID", True),
        "activity_type_id": F("many2one", "Activity Type", comodel="mail.activity.type"),
        "summary": F("char", "Summary"), "note": F("html", "Note"),
        "user_id": F("many2one", "Assigned to", comodel="res.users"),
        "date_deadline": F("date", "Due Date", True),
    },
    "maintenance.team": {"name": F("char", "Team Name", True)},
    "maintenance.stage": {"name": F("char", "Name", True)},
    "maintenance.equipment": {
        "name": F("char", "Equipment Name", True), "serial_no": F("char", "Serial Number"),
        "maintenance_team_id": F("many2one", "Maintenance Team", comodel="maintenance.team"),
        "technician_user_id": F("many2one", "Technician", comodel="res.users"),
        "company_id": F("many2one", "Company", comodel="res.company"),
    },
    "maintenance.request": {
        "name": F("char", "Subjects", True),
        "maintenance_type": F("selection", "Maintenance Type",
                              selection=("corrective", "preventive")),
        "description": F("html", "Description"),
        "priority": F("selection", "Priority", selection=("0", "1", "2", "3")),
        "request_date": F("date", "Request Date"),
        "schedule_date": F("datetime", "Scheduled Date"),
        "equipment_id": F("many2one", "Equipment", comodel="maintenance.equipment"),
        "maintenance_team_id": F("many2one", "Team", True, "maintenance.team"),
        "stage_id": F("many2one", "Stage", comodel="maintenance.stage"),
    },
    "ir.model.data": {"module": F("char", "Module"), "name": F("char", "External Identifier"),
                      "model": F("char", "Model Name"), "res_id": F("integer", "Record ID")},
}
QUALITY_MODELS: dict[str, dict[str, F]] = {
    "quality.alert.stage": {"name": F("char", "Name", True)},
    "quality.alert": {"name": F("char", "Title", True),
                      "lot_id": F("many2one", "Lot", comodel="stock.lot"),
                      "product_id": F("many2one", "Product", comodel="product.product"),
                      "workcenter_id": F("many2one", "Work Center", comodel="mrp.workcenter"),
                      "description": F("html", "Description"),
                      "stage_id": F("many2one", "Stage", comodel="quality.alert.stage")},
}
# Which group may do what (simplified from Odoo's ir.model.access for these models).
RIGHTS: dict[str, dict[str, str]] = {
    "mrp.workcenter.productivity": {"read": "mrp.group_mrp_user", "create": "mrp.group_mrp_user",
                                    "write": "mrp.group_mrp_user"},
    "mrp.production": {"read": "mrp.group_mrp_user", "write": "mrp.group_mrp_user"},
    "mrp.workcenter": {"read": "base.group_user", "create": "mrp.group_mrp_manager"},
    "maintenance.request": {"read": "base.group_user", "create": "base.group_user",
                            "write": "base.group_user"},
    "stock.lot": {"read": "stock.group_stock_user", "create": "stock.group_stock_user",
                  "write": "stock.group_stock_user"},
    "product.product": {"read": "base.group_user"},
    # Equipment: internal users read (only what they follow, see _visible), managers write.
    "maintenance.equipment": {"read": "base.group_user",
                              "write": "maintenance.group_equipment_manager",
                              "create": "maintenance.group_equipment_manager"},
    # Section 6: search_read on ir.model.data needs Administration / Access Rights.
    "ir.model.data": {"read": "base.group_erp_manager"},
}
DESCRIPTIONS = {"mrp.workcenter.productivity": "Workcenter Productivity Log",
                "mrp.production": "Manufacturing Order", "mrp.workcenter": "Resources",
                "stock.lot": "Lot/Serial", "maintenance.request": "Maintenance Request",
                "maintenance.equipment": "Maintenance Equipment", "ir.model.data": "Model Data",
                "product.product": "Product Variant"}
GROUP_NAMES = {"mrp.group_mrp_user": "Manufacturing/User",
               "mrp.group_mrp_manager": "Manufacturing/Administrator",
               "stock.group_stock_user": "Inventory/User", "base.group_user": "Role/User",
               "maintenance.group_equipment_manager": "Maintenance/Equipment Manager",
               "base.group_erp_manager": "Administration/Access Rights"}
# The groups docs/odoo.md tells an administrator to give the API user, and nothing more.
DOCUMENTED_GROUPS = {"mrp.group_mrp_user", "stock.group_stock_user",
                     "maintenance.group_equipment_manager"}
# has_access is not among them: it is called on a (possibly empty) recordset.
MODEL_METHODS = {"load", "search_read", "search_count", "search", "create",
                 "check_object_reference", "context_get", "check_access_rights"}
SIGNATURES = {"load": ("fields", "data"), "search_read": ("domain", "fields", "offset", "limit",
                                                          "order"),
              "search_count": ("domain",), "search": ("domain",), "create": ("vals_list",),
              "check_object_reference": ("module", "xml_id"), "read": ("fields",),
              "write": ("vals",), "action_feedback": ("feedback",),
              "check_access_rights": ("operation", "raise_exception"),
              "has_access": ("operation",)}
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class User:
    id: int
    login: str
    groups: set[str]
    tz: str = "Europe/Berlin"


@dataclass
class Call:
    protocol: str
    model: str
    method: str
    params: dict[str, Any]


class FakeOdoo:
    def __init__(self, version: int = 18, database: str = "plant", quality: bool = False,
                 jsonrpc: bool = True) -> None:
        self.version = version
        self.jsonrpc = jsonrpc  # JSON-RPC is deprecated in 19 and due to go later
        self.database = database
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models = dict(MODELS) | (QUALITY_MODELS if quality else {})
        self.records: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in self.models}
        self.xmlids: dict[str, tuple[str, int]] = {}
        self._ids = itertools.count(1)
        self.users: dict[int, User] = {}
        self.keys: dict[str, int] = {}
        self.calls: list[Call] = []
        self.drop_after: Callable[[Call], bool] | None = None
        self.fail_with: Callable[[Call], Fault | None] | None = None
        self.cooldown = False
        self.http_errors: list[int] = []  # answered (with a proxy's HTML) before anything else
        # Not Odoo: something in front of it that answers JSON-2 with HTTP 200 and this body.
        self.proxy_ok_body: Any = None
        self.mark_done_wizard: dict[str, Any] | None = None  # e.g. pending quality checks
        self.runner: web.AppRunner | None = None
        self._seed()

    # ------------------------------------------------------------ seeding

    def add(self, model: str, values: dict[str, Any], xmlid: str | None = None) -> int:
        rid = next(self._ids)
        record = {name: (False if spec.type != "float" else 0.0)
                  for name, spec in self.models[model].items()}
        record.update(values, id=rid)
        self.records[model][rid] = record
        if xmlid:
            self.xmlids[xmlid] = (model, rid)
        return rid

    def _seed(self) -> None:
        self.company = self.add("res.company", {"name": "My Company"}, "base.main_company")
        self.add("res.users", {"name": "Administrator", "login": "admin", "tz": "Europe/Berlin"})
        self.add("ir.model", {"model": "stock.lot", "name": "Lot/Serial"}, "stock.model_stock_lot")
        self.todo = self.add("mail.activity.type", {"name": "To-Do"},
                             "mail.mail_activity_data_todo")
        # Odoo's own loss reasons and their external ids (mrp/data/mrp_data.xml): no 3.
        for n, name in ((0, "Material Availability"), (1, "Equipment Failure"),
                        (2, "Setup and Adjustments"), (4, "Reduced Speed"),
                        (5, "Process Defect"), (6, "Reduced Yield"), (7, "Fully Productive Time")):
            self.add("mrp.workcenter.productivity.loss", {"name": name}, f"mrp.block_reason{n}")
        self.team = self.add("maintenance.team", {"name": "Internal Maintenance"},
                             "maintenance.equipment_team_maintenance")
        for n, name in enumerate(["New Request", "In Progress", "Repaired", "Scrap"], 1):
            self.add("maintenance.stage", {"name": name}, f"maintenance.stage_{n}")
        if "quality.alert.stage" in self.models:
            for n, name in enumerate(["New", "Confirmed", "Action Proposed", "Solved"], 1):
                self.add("quality.alert.stage", {"name": name}, f"quality.quality_alert_stage_{n}")

    def add_user(self, login: str, key: str, groups: set[str], tz: str = "Europe/Berlin",
                 email: str | None = None) -> int:
        uid = self.add("res.users", {"name": login.title(), "login": login, "tz": tz,
                                     "email": email or False})
        self.users[uid] = User(uid, login, groups | {"base.group_user"}, tz)
        self.keys[key] = uid
        return uid

    def workcenter(self, name: str, code: str) -> int:
        return self.add("mrp.workcenter", {"name": name, "code": code,
                                           "company_id": self.company})

    def order(self, name: str, qty: float, state: str = "confirmed",
              product: int | None = None) -> int:
        return self.add("mrp.production", {"name": name, "state": state, "product_qty": qty,
                                           "qty_producing": 0.0, "qty_produced": 0.0,
                                           "backorder_sequence": 0,
                                           "product_id": product or False})

    def product(self, name: str, code: str, tracking: str = "none") -> int:
        return self.add("product.product", {"name": name, "default_code": code,
                                            "tracking": tracking})

    def lot(self, name: str) -> int:
        product = self.add("product.product", {"name": f"Product of {name}"})
        return self.add("stock.lot", {"name": name, "product_id": product})

    def equipment(self, name: str, team_name: str | None = None,
                  followers: tuple[int, ...] = ()) -> int:
        team = self.add("maintenance.team", {"name": team_name}) if team_name else False
        return self.add("maintenance.equipment", {"name": name, "maintenance_team_id": team,
                                                  "company_id": self.company,
                                                  "followers": list(followers)})

    def of(self, model: str) -> list[dict[str, Any]]:
        return list(self.records[model].values())

    def by_xmlid(self, xmlid: str) -> dict[str, Any] | None:
        found = self.xmlids.get(xmlid)
        return self.records[found[0]].get(found[1]) if found else None

    def working_state(self, workcenter: int) -> str:
        open_lines = [r for r in self.of("mrp.workcenter.productivity")
                      if r["workcenter_id"] == workcenter and not r["date_end"]]
        return "blocked" if open_lines else "normal"

    # ------------------------------------------------------------ serving

    async def start(self) -> None:
        app = web.Application()
        if self.jsonrpc:
            app.router.add_post("/jsonrpc", self._jsonrpc)
        if self.version >= 19:
            app.router.add_post("/json/2/{model}/{method}", self._json2)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def _proxy_error(self) -> web.Response | None:
        if self.http_errors:
            status = self.http_errors.pop(0)
            return web.Response(status=status, text=f"<html>{status} Bad Gateway</html>",
                                content_type="text/html")
        return None

    async def _jsonrpc(self, request: web.Request) -> web.StreamResponse:
        if (proxied := self._proxy_error()) is not None:
            return proxied
        body = await request.json()
        params = body.get("params", {})
        service, method, args = params.get("service"), params.get("method"), params.get("args")
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": body.get("id")}
        try:
            if service == "common" and method == "version":
                result: Any = {"server_version": f"{self.version}.0",
                               "server_version_info": [self.version, 0, 0, "final", 0, ""],
                               "server_serie": f"{self.version}.0", "protocol_version": 1}
            elif service == "common" and method == "login":
                if self.cooldown:
                    raise Fault("odoo.exceptions.AccessDenied", "Too many login failures, "
                                "please wait a bit before trying again.", 403)
                db, login, key = args
                uid = self.keys.get(key)
                ok = db == self.database and uid is not None and self.users[uid].login == login
                result = uid if ok else False
            elif service == "object" and method == "execute_kw":
                db, uid, key, model, name, positional, named = [*args, {}][:7]
                if db != self.database:
                    raise Fault("psycopg2.OperationalError", "connection to server failed: "
                                f'FATAL:  database "{db}" does not exist\n', 500)
                if self.keys.get(key) != uid or uid not in self.users:
                    raise ACCESS_DENIED
                call = Call("jsonrpc", model, name, dict(named or {}))
                result = self._execute(call, self.users[uid], list(positional or []))
                if self.drop_after and self.drop_after(call):
                    return self._drop(request)
            else:
                raise Fault("builtins.KeyError", f"{service}.{method}", 500)
        except Fault as fault:
            reply["error"] = {"code": 200, "message": "Odoo Server Error",
                              "data": {"name": fault.name, "debug": "Traceback ...",
                                       "message": fault.message, "arguments": [fault.message],
                                       "context": {}}}
            return web.json_response(reply)
        if result is not None:  # a None result leaves the key out entirely
            reply["result"] = result
        return web.json_response(reply)

    async def _json2(self, request: web.Request) -> web.StreamResponse:
        if (proxied := self._proxy_error()) is not None:
            return proxied
        if self.proxy_ok_body is not None:
            return web.json_response(self.proxy_ok_body)
        auth = request.headers.get("Authorization", "")
        uid = self.keys.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if uid is None:
            return web.json_response({"name": "werkzeug.exceptions.Unauthorized",
                                      "message": "Invalid apikey",
                                      "arguments": ["Invalid apikey", 401], "context": {},
                                      "debug": "Traceback ..."}, status=401)
        if request.headers.get("X-Odoo-Database") not in (None, self.database):
            return web.json_response({"name": "werkzeug.exceptions.NotFound",
                                      "message": "database not found"}, status=404)
        body = await request.json() if request.can_read_body else {}
        call = Call("json2", request.match_info["model"], request.match_info["method"],
                    dict(body))
        try:
            result = self._execute(call, self.users[uid], [])
        except Fault as fault:
            return web.json_response({"name": fault.name, "message": fault.message,
                                      "arguments": [fault.message], "context": {},
                                      "debug": "Traceback ..."}, status=fault.status)
        if self.drop_after and self.drop_after(call):
            return self._drop(request)
        return web.json_response(result)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        # Committed, and then the answer is lost: the client sees the connection drop.
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=200)

    # ------------------------------------------------------------ the ORM

    def _execute(self, call: Call, user: User, positional: list[Any]) -> Any:
        self.calls.append(call)
        if self.fail_with is not None:
            fault = self.fail_with(call)
            if fault is not None:
                raise fault
        model, method = call.model, call.method
        if model not in self.models:
            if call.protocol == "json2":
                raise Fault("werkzeug.exceptions.NotFound", f"Model {model} not found", 404)
            raise user_error(f"Object {model} doesn't exist")
        if method.startswith("_"):
            raise access_error(f"Private methods (such as '{model}.{method}') cannot be "
                               "called remotely.")
        named = dict(call.params)
        context = named.pop("context", None) or {}
        ids: list[int] | None = None
        if method == "has_access" and call.protocol == "jsonrpc" and not positional:
            # Section 6: asked without an id list, Odoo 18 fails server-side (a traceback
            # in its log every call).
            raise Fault("builtins.IndexError", "tuple index out of range", 500)
        if method not in MODEL_METHODS:
            if call.protocol == "json2":
                ids = named.pop("ids", [])
            else:
                ids = positional.pop(0) if positional else named.pop("ids", [])
        elif call.protocol == "json2":
            named.pop("ids", None)
        for name, value in zip(SIGNATURES.get(method, ()), positional, strict=False):
            named[name] = value
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            raise Fault("builtins.AttributeError",
                        f"The method '{model}.{method}' does not exist", 500)
        return handler(model, user, context, ids, **named) if ids is not None else \
            handler(model, user, context, **named)

    def _check(self, model: str, op: str, user: User) -> str | None:
        group = RIGHTS.get(model, {}).get(op)
        if group is None or group in user.groups:
            return None
        return (f"You are not allowed to {'access' if op == 'read' else op} "
                f"'{DESCRIPTIONS.get(model, model)}' ({model}) records.\n\nThis operation is "
                f"allowed for the following groups:\n\t- {GROUP_NAMES[group]}\n\nContact your "
                "administrator to request access if necessary.")

    def _allow(self, model: str, op: str, user: User) -> None:
        denied = self._check(model, op, user)
        if denied:
            raise access_error(denied)

    def _matches(self, record: dict[str, Any], domain: list[Any]) -> bool:
        def leaf(term: Any) -> bool:
            name, op, value = term
            have = record.get(name)
            if op == "=":
                return bool(have == value)
            if op == "in":
                return have in value
            if op == "=like":
                pattern = "^" + re.escape(value).replace("%", ".*").replace("_", ".") + "$"
                return isinstance(have, str) and re.match(pattern, have) is not None
            raise user_error(f"Invalid operator {op!r}")

        stack: list[bool] = []
        for term in reversed(domain):
            if term == "|":
                stack.append(stack.pop() | stack.pop())
            elif term == "&":
                stack.append(stack.pop() & stack.pop())
            else:
                stack.append(leaf(term))
        return all(stack)

    def _m_search_read(self, model: str, user: User, context: dict[str, Any],
                       domain: list[Any] | None = None, fields: list[str] | None = None,
                       offset: int = 0, limit: int | None = None,
                       order: str | None = None) -> list[dict[str, Any]]:
        self._allow(model, "read", user)
        if model == "ir.model.data":  # external ids live in self.xmlids
            self.records[model] = {
                n: {"id": n, "module": key.split(".", 1)[0], "name": key.split(".", 1)[1],
                    "model": target[0], "res_id": target[1]}
                for n, (key, target) in enumerate(self.xmlids.items(), 1)}
        found = [r for r in self.records[model].values()
                 if self._matches(r, domain or []) and self._visible(model, r, user)]
        found = found[offset:offset + limit if limit else None]
        return [self._view(model, r, fields) for r in found]

    def _m_search_count(self, model: str, user: User, context: dict[str, Any],
                        domain: list[Any] | None = None) -> int:
        return len(self._m_search_read(model, user, context, domain))

    def _view(self, model: str, record: dict[str, Any],
              fields: list[str] | None) -> dict[str, Any]:
        names = fields or list(self.models[model])
        view: dict[str, Any] = {"id": record["id"]}
        for name in names:
            if name == "id":
                continue
            value = record.get(name, False)
            spec = self.models[model].get(name)
            if spec and spec.type == "many2one" and value:
                value = [value, self.records[spec.comodel or ""][value].get("name", "")]
            view[name] = value
        return view

    def _m_read(self, model: str, user: User, context: dict[str, Any], ids: list[int],
                fields: list[str] | None = None) -> list[dict[str, Any]]:
        self._allow(model, "read", user)
        # 18.0: reading ids that do not exist answers [] rather than an error.
        return [self._view(model, self.records[model][i], fields) for i in ids
                if i in self.records[model]]

    def _m_write(self, model: str, user: User, context: dict[str, Any], ids: list[int],
                 vals: dict[str, Any]) -> bool:
        self._allow(model, "write", user)
        missing = [i for i in ids if i not in self.records[model]]
        if missing:
            raise missing_error(model, missing, user.id)
        for i in ids:
            self.records[model][i].update(vals)
        return True

    def _visible(self, model: str, record: dict[str, Any], user: User) -> bool:
        """Record rules: an internal user without Maintenance / Equipment Manager sees
        only the equipment it follows (section 6; maintenance's equipment_rule_user)."""
        if model != "maintenance.equipment":
            return True
        return ("maintenance.group_equipment_manager" in user.groups
                or user.id in record.get("followers", ()))

    def _m_check_object_reference(self, model: str, user: User, context: dict[str, Any],
                                  module: str, xml_id: str) -> list[Any]:
        # Section 6: answers users who may not read ir.model.data.
        found = self.xmlids.get(f"{module}.{xml_id}")
        if found is None:
            raise Fault("builtins.ValueError",
                        f"External ID not found in the system: {module}.{xml_id}", 500)
        # Odoo's source searches the target model as the user: no read right is an
        # AccessError, and a record its rules hide comes back as [model, False].
        self._allow(found[0], "read", user)
        record = self.records[found[0]].get(found[1], {})
        return [found[0], found[1] if self._visible(found[0], record, user) else False]

    def _m_context_get(self, model: str, user: User, context: dict[str, Any]) -> dict[str, Any]:
        return {"lang": "en_US", "tz": user.tz, "uid": user.id}

    def _m_check_access_rights(self, model: str, user: User, context: dict[str, Any],
                               operation: str, raise_exception: bool = True) -> bool:
        denied = self._check(model, operation, user)
        if denied and raise_exception:
            raise access_error(denied)
        return denied is None

    def _m_has_access(self, model: str, user: User, context: dict[str, Any], ids: list[int],
                      operation: str) -> bool:
        return self._check(model, operation, user) is None

    # ------------------------------------------------------------ load()

    def _m_load(self, model: str, user: User, context: dict[str, Any], fields: list[str],
                data: list[list[str]]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        planned: list[tuple[str | None, dict[str, Any]]] = []
        zone = ZoneInfo(context.get("tz") or user.tz or "UTC")
        for index, row in enumerate(data):
            def fail(message: str, field: str | None = None, *, at: int = index) -> None:
                entry: dict[str, Any] = {"rows": {"from": at, "to": at}, "type": "error",
                                         "record": at, "message": message}
                if field:
                    entry["field"] = field
                messages.append(entry)

            xmlid: str | None = None
            vals: dict[str, Any] = {}
            for name, raw in zip(fields, row, strict=True):
                if name == "id":
                    xmlid = raw
                    continue
                base, _, suffix = name.partition("/")
                spec = self.models[model].get(base)
                if spec is None:
                    fail(f"Unknown field '{base}'", base)
                    continue
                if raw == "":
                    vals[base] = False  # an empty cell clears the field
                elif suffix == ".id":
                    target = int(raw) if raw.isdigit() else None
                    if target is None or target not in self.records[spec.comodel or ""]:
                        fail(f"No matching record found for database id '{raw}' in field "
                             f"'{spec.label}'", base)
                    else:
                        vals[base] = target
                elif suffix == "id":
                    found = self.xmlids.get(raw)
                    if found is None:
                        fail(f"No matching record found for external id '{raw}' in field "
                             f"'{spec.label}'", base)
                    else:
                        vals[base] = found[1]
                elif spec.type == "datetime":
                    if not DATETIME.match(raw):
                        fail(f"'{raw}' does not seem to be a valid datetime for field "
                             f"'{spec.label}'", base)
                    else:
                        local = datetime.fromisoformat(raw).replace(tzinfo=zone)
                        vals[base] = (local.astimezone(ZoneInfo("UTC"))
                                      .strftime("%Y-%m-%d %H:%M:%S"))
                elif spec.type == "date":
                    if not DATE.match(raw):
                        fail(f"'{raw}' does not seem to be a valid date for field "
                             f"'{spec.label}'", base)
                    else:
                        vals[base] = raw
                elif spec.type == "selection" and raw not in spec.selection:
                    fail(f"Value '{raw}' not found in selection field '{spec.label}'", base)
                elif spec.type == "integer":
                    vals[base] = int(raw)
                elif spec.type == "html":
                    vals[base] = raw if raw.startswith("<") else f"<p>{raw}</p>"
                else:
                    vals[base] = raw
            existing = self.xmlids.get(xmlid) if xmlid else None
            op = "write" if existing else "create"
            denied = self._check(model, op, user)
            if denied:
                fail(denied)
            assignee = vals.get("user_id")
            if (model == "mail.activity" and assignee and assignee != user.id
                    and not self.records["res.users"][user.id].get("email")):
                # Section 6: the assignee is notified by email from the API user.
                fail("Unable to send message, please configure the sender's email address.")
            if existing is None:
                defaults = self._defaults(model, user)
                merged = defaults | vals
                for name, spec in self.models[model].items():
                    if spec.required and not merged.get(name):
                        fail(f"Missing required value for the field '{spec.label}' ({name})",
                             name)
            planned.append((xmlid, vals))
        if messages:
            # All or nothing: nothing of the batch is written.
            return {"ids": False, "messages": messages, "nextrow": 0}
        ids = []
        for xmlid, vals in planned:
            existing = self.xmlids.get(xmlid) if xmlid else None
            if existing:
                self.records[model][existing[1]].update(vals)
                ids.append(existing[1])
            else:
                rid = self.add(model, self._defaults(model, user) | vals, xmlid)
                ids.append(rid)
        return {"ids": ids, "messages": [], "nextrow": 0}

    def _defaults(self, model: str, user: User) -> dict[str, Any]:
        if model == "mail.activity":
            return {"user_id": user.id}
        if model == "maintenance.request":
            # The company's first team, whatever the equipment says (as Odoo over RPC).
            first = min(r["id"] for r in self.of("maintenance.team"))
            return {"maintenance_team_id": first, "stage_id": self.xmlids["maintenance.stage_1"][1]}
        if model == "quality.alert":
            return {"stage_id": self.xmlids["quality.quality_alert_stage_1"][1]}
        return {}

    # ------------------------------------------------------------ business methods

    def _m_set_qty_producing(self, model: str, user: User, context: dict[str, Any],
                             ids: list[int]) -> None:
        self._allow(model, "write", user)
        for i in ids:
            order = self.records[model].get(i)
            if order is None:
                raise missing_error(model, [i], user.id)
            if order["state"] in ("confirmed", "draft") and order["qty_producing"] > 0:
                order["state"] = "progress"
            order["components_moved"] = order["qty_producing"]
        return None

    def _m_button_mark_done(self, model: str, user: User, context: dict[str, Any],
                            ids: list[int]) -> Any:
        self._allow(model, "write", user)
        [i] = ids
        order = self.records[model].get(i)
        if order is None:
            raise missing_error(model, [i], user.id)
        if order["state"] == "done":
            raise user_error("This manufacturing order is already done.")
        producing = order["qty_producing"]
        if producing == 0 and order["state"] == "draft":
            producing = order["qty_producing"] = order["product_qty"]  # the surprise
        if self.mark_done_wizard is not None:
            return self.mark_done_wizard
        product = self.records["product.product"].get(order["product_id"])
        if product and product["tracking"] in ("lot", "serial") and not order["lot_producing_id"]:
            # Section 6: the message names the product on its second line.
            raise user_error("You need to supply a Lot/Serial Number for product:\n- "
                             f"[{product['default_code']}] {product['name']}")
        if i in (context.get("mo_ids_to_backorder") or []) and producing >= order["product_qty"]:
            # Section 6: a backorder of zero or less is refused.
            raise validation_error("The operation cannot be completed: The quantity to "
                                   "produce must be positive!")
        if not context.get("skip_consumption"):
            return {"type": "ir.actions.act_window", "res_model": "mrp.consumption.warning",
                    "name": "Consumption Warning", "views": [[False, "form"]],
                    "target": "new"}
        short = producing < order["product_qty"]
        if short and not context.get("skip_backorder"):
            return {"type": "ir.actions.act_window", "res_model": "mrp.production.backorder",
                    "name": "You produced less than initial demand", "target": "new"}
        rest_qty = order["product_qty"] - producing
        order.update(state="done", qty_produced=producing)
        if short and i in (context.get("mo_ids_to_backorder") or []):
            # Odoo renames the closed order (-001) and the rest goes on in -002.
            base = re.sub(r"-\d{3}$", "", order["name"])
            sequence = order["backorder_sequence"] or 1
            order.update(name=f"{base}-{sequence:03d}", backorder_sequence=sequence,
                         product_qty=producing)
            rest = self.order(f"{base}-{sequence + 1:03d}", rest_qty)
            self.records[model][rest]["backorder_sequence"] = sequence + 1
            return {"res_model": "mrp.production", "type": "ir.actions.act_window",
                    "context": {"skip_backorder": False, "skip_consumption": False,
                                "mo_ids_to_backorder": None},
                    "views": [[False, "form"]], "view_mode": "form", "res_id": rest}
        if short:
            order["product_qty"] = producing
        return True

    def _m_action_feedback(self, model: str, user: User, context: dict[str, Any],
                           ids: list[int], feedback: str | None = None) -> int:
        missing = [i for i in ids if i not in self.records[model]]
        if missing:
            raise missing_error(model, missing, user.id)
        for i in ids:
            # Done activities are deleted, and their external ids with them.
            del self.records[model][i]
            for key, value in list(self.xmlids.items()):
                if value == (model, i):
                    del self.xmlids[key]
        return next(self._ids)  # the id of the chatter message

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({"records": self.records, "xmlids": self.xmlids})
