"""Derivation state of one asset: everything needed to continue after a restart.

It is committed in the same SQLite transaction as the events it produced, so
after a crash the state and the events always agree.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OpenDowntime:
    id: str
    started_at: float
    start_estimated: bool
    reason_code: int | None
    reason: str
    work_order: str | None


@dataclass
class OpenHold:
    id: str
    raised_at: float
    lot: str | None
    reason: str | None
    quantity: float | None
    work_order: str | None


@dataclass
class AssetState:
    machine_state: str | None = None
    state_code: int | None = None
    state_since: float | None = None
    # Down-class state entered but not yet past the micro-stop threshold.
    down_since: float | None = None
    down_since_estimated: bool = False
    down_seen_locally: float | None = None  # agent clock, for the threshold timer
    downtime: OpenDowntime | None = None
    hold_active: bool | None = None
    hold: OpenHold | None = None
    # Latest context values.
    reason_code: int | None = None
    work_order: str | None = None
    lot: str | None = None
    hold_reason: str | None = None
    hold_quantity: float | None = None
    # Counters: last raw value seen, quantities not yet confirmed, totals per work order.
    counter_last: dict[str, int] = field(default_factory=dict)
    counter_max_step: dict[str, int] = field(default_factory=dict)  # largest exact increment
    pending: dict[str, int] = field(default_factory=lambda: {"good": 0, "scrap": 0})
    pending_estimated: bool = False
    interval_start: float | None = None
    totals: dict[str, int] = field(default_factory=lambda: {"good": 0, "scrap": 0})
    totals_work_order: str | None = None
    sequences: dict[str, int] = field(default_factory=dict)  # lane label -> last sequence

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AssetState:
        raw: dict[str, Any] = json.loads(text)
        downtime = raw.pop("downtime", None)
        hold = raw.pop("hold", None)
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in known})
        state.downtime = OpenDowntime(**downtime) if downtime else None
        state.hold = OpenHold(**hold) if hold else None
        return state

    def copy(self) -> AssetState:
        return AssetState.from_json(self.to_json())
