"""Finding the Odoo records that plant names refer to: work centers, equipment, lots,
teams, users. Found records are cached for a while (they rarely change); a name
that is not found is asked again next time, so fixing it in Odoo and replaying
the dead letter is enough."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .rpc import OdooClient, OdooRefused

CACHE_SECONDS = 600.0


@dataclass(frozen=True)
class Found:
    id: int
    name: str
    fields: dict[str, Any]

    def many2one(self, field: str) -> int | None:
        value = self.fields.get(field)
        return int(value[0]) if isinstance(value, list) and value else None


class NotFound(OdooRefused):
    pass


class Lookups:
    def __init__(self, client: OdooClient, database: str) -> None:
        self.client = client
        self.database = database
        self._cache: dict[tuple[str, str], tuple[float, Found]] = {}

    async def workcenter(self, code_or_name: str, asset: str) -> Found:
        return await self._one(
            "mrp.workcenter", code_or_name, ["|", ("code", "=", code_or_name),
                                             ("name", "=", code_or_name)],
            ["name", "code", "company_id"],
            f"work center '{code_or_name}' not found in database '{self.database}' (asset "
            f"'{asset}'); create it in Manufacturing > Configuration > Work Centers with that "
            "code, or correct the asset's erp.odoo_workcenter")

    async def equipment(self, name_or_serial: str, asset: str) -> Found:
        try:
            return await self._one(
                "maintenance.equipment", name_or_serial,
                ["|", ("name", "=", name_or_serial), ("serial_no", "=", name_or_serial)],
                ["name", "maintenance_team_id", "technician_user_id", "company_id"],
                f"equipment '{name_or_serial}' not found in database '{self.database}' (asset "
                f"'{asset}'); create it in Maintenance > Equipment, or correct the asset's "
                "erp.equipment")
        except NotFound as exc:
            # Odoo shows an internal user only the equipment it follows, and answers an
            # empty search, not an error, for the rest: hidden looks the same as missing.
            if await self.may("maintenance.equipment", "write") is not False:
                raise
            raise NotFound(
                f"equipment '{name_or_serial}' not found in database '{self.database}', or not "
                f"visible to this user (asset '{asset}'): make the API user a follower of the "
                "equipment or grant it Maintenance / Equipment Manager; otherwise create the "
                "equipment in Maintenance > Equipment, or correct the asset's erp.equipment"
            ) from exc

    async def team(self, name: str) -> Found:
        return await self._one(
            "maintenance.team", name, [("name", "=", name)], ["name"],
            f"maintenance team '{name}' not found in database '{self.database}'; create it in "
            "Maintenance > Configuration > Maintenance Teams, or correct maintenance.team")

    async def user(self, login: str) -> Found:
        return await self._one(
            "res.users", login, [("login", "=", login)], ["name", "login"],
            f"user '{login}' not found in database '{self.database}'; correct quality.assignee")

    async def lot(self, name: str) -> Found:
        return await self._one(
            "stock.lot", name, [("name", "=", name)], ["name", "product_id", "company_id"],
            f"lot '{name}' not found in database '{self.database}'; the lot must exist in "
            "Inventory (Products > Lots/Serial Numbers) before a hold can be put on it")

    async def external_id(self, xmlid: str) -> tuple[str, int] | None:
        """(model, id) of an external id, or None if no record carries it.

        `check_object_reference` answers any internal user; reading ir.model.data itself
        needs Administration / Access Rights, which the API user must not need."""
        module, name = xmlid.split(".", 1)
        try:
            found = await self.client.call("ir.model.data", "check_object_reference",
                                           module=module, xml_id=name)
        except OdooRefused as exc:
            if exc.answer and exc.answer.startswith("builtins.ValueError"):
                return None  # no such external id
            raise
        if not isinstance(found, list) or len(found) != 2:
            raise OdooRefused(f"Odoo answered check_object_reference({xmlid}) with "
                              f"{str(found)[:80]!r}, not [model, id]")
        model, record = found
        if record is False:
            # The record exists, but this user may not read it.
            raise OdooRefused(f"the {model} record with external id {xmlid} exists but the API "
                              "user may not read it; give the user the group that reads "
                              f"{model} records")
        return str(model), int(record)

    async def may(self, model: str, operation: str) -> bool | None:
        """Whether the API user has the right, or None when Odoo cannot say (Odoo 17
        has no has_access; check_access_rights answers the same there)."""
        try:
            # Odoo 18 needs the (empty) id list: without it, has_access fails server-side
            # with an IndexError.
            answer = await self.client.call(model, "has_access", [], operation=operation)
        except OdooRefused as exc:
            if "AttributeError" not in str(exc.answer):
                raise
            try:
                answer = await self.client.call(model, "check_access_rights",
                                                operation=operation, raise_exception=False)
            except OdooRefused:
                return None
        return bool(answer)

    def forget(self, model: str, key: str) -> None:
        self._cache.pop((model, key), None)

    async def _one(self, model: str, key: str, domain: list[Any], fields: list[str],
                   missing: str) -> Found:
        cached = self._cache.get((model, key))
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        rows = await self.client.call(model, "search_read", domain=domain,
                                      fields=["id", *fields], limit=2)
        if not rows:
            raise NotFound(missing)
        if len(rows) > 1:
            raise OdooRefused(f"{model}: more than one record matches '{key}' in database "
                              f"'{self.database}'; make the name or code unique")
        row = rows[0]
        found = Found(int(row["id"]), str(row.get("name") or key), row)
        self._cache[(model, key)] = (time.monotonic(), found)
        return found
