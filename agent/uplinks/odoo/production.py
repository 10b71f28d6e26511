"""Production confirmations on manufacturing orders.

The event carries the cumulative good quantity for the work order; that absolute
number goes to `mrp.production.qty_producing`, followed by `set_qty_producing`
(writing the field alone does not move the components over RPC). An absolute
value is idempotent by nature, and it is never lowered: a late or replayed
confirmation with a smaller total changes nothing.

Closing asks for a backorder only when less than planned was made, as Odoo's own
screen does: Odoo refuses a backorder of zero or less. An order of a lot-tracked
product closes only with a finished lot: the confirmation's `lot` (the asset's
production.lot tag) is found, or created under an external id, and set as the
order's `lot_producing_id` first.

When Odoo closes an order with a backorder it renames it (`WH/MO/00001-001`) and
the rest continues in `WH/MO/00001-002`. An order is therefore found by its name
or by its backorders' names; the quantity already done in closed parts is
subtracted, and the open part gets the remainder.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from . import records
from .rpc import OdooClient, OdooRefused

log = logging.getLogger("floorlink.odoo")

MO_FIELDS = ["name", "state", "qty_producing", "qty_produced", "product_qty",
             "backorder_sequence", "product_id", "lot_producing_id"]
TRACKED = ("lot", "serial")
CLOSED = ("done", "cancel")


@dataclass
class OrderChain:
    """A work order as Odoo holds it: the part still open, and what closed parts made."""

    work_order: str
    current: int | None
    current_name: str | None
    done_qty: float


class Orders:
    def __init__(self, client: OdooClient, database: str) -> None:
        self.client = client
        self.database = database
        self._chains: dict[str, OrderChain] = {}

    async def confirm(self, work_order: str, good_total: float, close: bool,
                      backorder: bool, lot: str | None = None, no_lot: str = "") -> str:
        """Bring the order to `good_total`; with `close`, mark it done (in `lot` when the
        product is lot-tracked; `no_lot` says why there is none). Says what it did."""
        chain = await self._chain(work_order)
        current = await self._current_state(chain)
        if current is None:
            chain = await self._chain(work_order, fresh=True)
            current = await self._current_state(chain)
        if current is None:
            if good_total > chain.done_qty:
                raise OdooRefused(
                    f"manufacturing order '{work_order}' is already done in database "
                    f"'{self.database}' with {chain.done_qty:g} produced; the {good_total:g} "
                    "now confirmed cannot be recorded on it. Record the difference in Odoo")
            return "order already done"
        target = good_total - chain.done_qty
        producing = float(current["qty_producing"] or 0)
        did = "unchanged"
        if target > producing:
            assert chain.current is not None
            await self.client.call("mrp.production", "write", [chain.current],
                                   vals={"qty_producing": target})
            # None comes back as a response without `result`: that is success.
            await self.client.call("mrp.production", "set_qty_producing", [chain.current])
            producing, did = target, f"qty_producing {target:g}"
        if close:
            if target <= 0 or producing > target:
                # A replay: this quantity is already in a closed part, or later
                # confirmations went past it. Closing now would close the wrong part.
                return did + "; not marked done: the order moved on since"
            if lot:
                did += await self._set_lot(chain, current, lot)
            short = producing < float(current["product_qty"] or 0)
            did += "; " + await self._mark_done(chain, producing, backorder and short, no_lot)
        return did

    async def _chain(self, work_order: str, fresh: bool = False) -> OrderChain:
        if not fresh and work_order in self._chains:
            return self._chains[work_order]
        rows = await self.client.call(
            "mrp.production", "search_read",
            domain=["|", ("name", "=", work_order), ("name", "=like", f"{work_order}-%")],
            fields=MO_FIELDS)
        backorder = re.compile(re.escape(work_order) + r"-\d{3}")
        parts = sorted((r for r in rows if r["name"] == work_order
                        or backorder.fullmatch(str(r["name"]))),
                       key=lambda r: (int(r.get("backorder_sequence") or 0), int(r["id"])))
        if not parts:
            raise OdooRefused(
                f"manufacturing order '{work_order}' not found in database '{self.database}'; "
                "the work-order tag must carry the order's reference as Odoo shows it "
                "(e.g. WH/MO/00001), and the order must exist")
        done_qty = sum(float(r.get("qty_produced") or 0) for r in parts if r["state"] == "done")
        open_parts = [r for r in parts if r["state"] not in CLOSED]
        current = open_parts[0] if open_parts else None
        chain = OrderChain(work_order, int(current["id"]) if current else None,
                           str(current["name"]) if current else None, done_qty)
        self._chains[work_order] = chain
        return chain

    async def _current_state(self, chain: OrderChain) -> dict[str, Any] | None:
        if chain.current is None:
            return None
        rows = await self.client.call("mrp.production", "read", [chain.current],
                                      fields=MO_FIELDS)
        # read() of a deleted record answers [] (no error): treat as closed, look again.
        if not rows or rows[0]["state"] in CLOSED:
            return None
        return dict(rows[0])

    async def _set_lot(self, chain: OrderChain, order: dict[str, Any], lot: str) -> str:
        """Make `lot` the order's finished lot when its product is lot-tracked."""
        product = _many2one(order.get("product_id"))
        if product is None:
            return ""
        rows = await self.client.call("product.product", "read", [product], fields=["tracking"])
        if not rows or rows[0].get("tracking") not in TRACKED:
            return ""
        lot_id = await self._lot(product, lot)
        if _many2one(order.get("lot_producing_id")) != lot_id:
            assert chain.current is not None
            await self.client.call("mrp.production", "write", [chain.current],
                                   vals={"lot_producing_id": lot_id})
        return f"; lot {lot}"

    async def _lot(self, product: int, name: str) -> int:
        """The stock.lot of this name and product: an existing one, else a new one under
        an external id made of both, so a repeated call never makes a second."""
        found = await self.client.call("stock.lot", "search_read",
                                       domain=[("name", "=", name), ("product_id", "=", product)],
                                       fields=["id"], limit=1)
        if found:
            return int(found[0]["id"])
        digest = hashlib.sha256(name.encode()).hexdigest()[:24]
        load = records.make_load("stock.lot", [("id", f"{records.MODULE}.lot_{product}_{digest}"),
                                               ("name", name), ("product_id/.id", product)])
        answer = await self.client.call("stock.lot", "load", fields=list(load.fields),
                                        data=[list(load.row)], context=dict(records.LOAD_CONTEXT))
        ids = answer.get("ids") if isinstance(answer, dict) else None
        if not ids:
            messages = answer.get("messages") if isinstance(answer, dict) else None
            raise OdooRefused(records.explain_load(load, messages or [], self.database),
                              str(answer)[:300])
        return int(ids[0])

    async def _mark_done(self, chain: OrderChain, producing: float, backorder: bool,
                         no_lot: str) -> str:
        assert chain.current is not None
        if producing <= 0:
            # On an order with nothing producing, button_mark_done produces the FULL
            # quantity. Never call it then.
            return "not marked done: nothing produced"
        mo = chain.current
        context = {"skip_backorder": True, "skip_consumption": True,
                   "mo_ids_to_backorder": [mo] if backorder else []}
        try:
            answer = await self.client.call("mrp.production", "button_mark_done", [mo],
                                            context=context)
        except OdooRefused as exc:
            if no_lot and "Lot/Serial Number" in str(exc):
                raise OdooRefused(f"{exc}\n{no_lot}", exc.answer) from exc
            raise
        if answer is True:
            chain.current, chain.current_name = None, None
            chain.done_qty += producing
            return "marked done"
        if (isinstance(answer, dict) and answer.get("type") == "ir.actions.act_window"
                and answer.get("res_model") == "mrp.production" and answer.get("res_id")):
            # Success with a backorder: Odoo renamed the order; the rest goes on in res_id.
            chain.current, chain.current_name = int(answer["res_id"]), None
            chain.done_qty += producing
            return f"marked done, backorder id {chain.current}"
        wizard = answer.get("name") or answer.get("res_model") if isinstance(answer, dict) \
            else repr(answer)
        model = answer.get("res_model") if isinstance(answer, dict) else None
        raise OdooRefused(
            f"Odoo needs a person to finish manufacturing order '{chain.work_order}': "
            f"marking it done opened '{wizard}' ({model}). Finish it in Odoo; the quantity "
            "is already recorded", f"button_mark_done returned {str(answer)[:200]}")


def _many2one(value: Any) -> int | None:
    """The id of a many2one as read() gives it: [id, name], or false."""
    return int(value[0]) if isinstance(value, list) and value else None
