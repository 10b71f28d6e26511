"""One simulated press: states, counters, faults, holds, lots and work orders.

Deterministic for a seed: the sequence of segments (running, idle, down with a
fault code, micro-stops), their lengths and every part's good/scrap outcome
come from the seeded generator; only the wall clock drives when they happen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

RUNNING, IDLE, DOWN, SETUP, PLANNED_STOP = 1, 2, 3, 4, 5
STATE_NAMES = {RUNNING: "running", IDLE: "idle", DOWN: "down", SETUP: "setup",
               PLANNED_STOP: "planned_stop"}
FAULTS = (101, 102, 103, 104)
HOLD_REASONS = {201: "Burr on cut edge", 202: "Dimension out of tolerance",
                203: "Surface scratches"}


@dataclass
class PressSnapshot:
    state: int
    good: int
    scrap: int
    fault: int
    hold: bool
    hold_reason: int
    lot: str
    work_order: str


@dataclass
class PressModel:
    asset: str
    seed: int
    cycle_time: float = 0.3
    scrap_rate: float = 0.04
    first_counter: int = 1000
    rng: random.Random = field(init=False)
    snap: PressSnapshot = field(init=False)
    _segment_end: float = field(init=False, default=0.0)
    _hold_toggle_at: float = field(init=False, default=0.0)
    _cycle_progress: float = field(init=False, default=0.0)
    # Each press its own manufacturing orders: in a plant an order runs on one work
    # center, and two presses booking one order would overwrite each other's totals.
    first_order: int = 1001
    _order_number: int = field(init=False, default=1001)
    _lot_number: int = field(init=False, default=1)
    _last_time: float | None = field(init=False, default=None)
    frozen: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._order_number = self.first_order
        self.snap = PressSnapshot(IDLE, self.first_counter, self.first_counter // 20, 0, False,
                                  0, self._lot(), self._order())

    def _order(self) -> str:
        return f"WO-{self._order_number}"

    def _lot(self) -> str:
        return f"LOT-2026-{self._lot_number:04d}"

    def begin(self, now: float) -> None:
        self._last_time = now
        self._segment_end = now
        self._hold_toggle_at = now + self.rng.uniform(6.0, 12.0)

    def freeze(self) -> None:
        """End of a scenario: idle for good, no hold, counters still."""
        self.frozen = True
        self.snap.state, self.snap.fault, self.snap.hold, self.snap.hold_reason = IDLE, 0, False, 0

    def advance(self, now: float) -> list[dict[str, object]]:
        """Move the press to `now`; return the ground-truth records of what changed."""
        if self.frozen or self._last_time is None:
            return []
        records: list[dict[str, object]] = []
        dt = max(0.0, now - self._last_time)
        self._last_time = now
        if self.snap.state == RUNNING:
            self._cycle_progress += dt
            while self._cycle_progress >= self.cycle_time:
                self._cycle_progress -= self.cycle_time
                if self.rng.random() < self.scrap_rate:
                    self.snap.scrap += 1
                else:
                    self.snap.good += 1
        if now >= self._hold_toggle_at:
            records.append(self._toggle_hold(now))
        if now >= self._segment_end:
            records.extend(self._next_segment(now))
        return records

    def _toggle_hold(self, now: float) -> dict[str, object]:
        snap = self.snap
        snap.hold = not snap.hold
        if snap.hold:
            snap.hold_reason = self.rng.choice(sorted(HOLD_REASONS))
            self._hold_toggle_at = now + self.rng.uniform(2.0, 4.0)
        else:
            snap.hold_reason = 0
            self._hold_toggle_at = now + self.rng.uniform(8.0, 16.0)
        return {"kind": "hold", "active": snap.hold, "lot": snap.lot,
                "reason": snap.hold_reason or None, "work_order": snap.work_order}

    def _next_segment(self, now: float) -> list[dict[str, object]]:
        snap, rng = self.snap, self.rng
        records: list[dict[str, object]] = []
        previous = snap.state
        if previous != RUNNING:
            state, fault, length = RUNNING, 0, rng.uniform(4.0, 8.0)
        else:
            pick = rng.random()
            if pick < 0.4:
                state, fault, length = DOWN, rng.choice(FAULTS), rng.uniform(2.5, 5.0)
            elif pick < 0.6:
                state, fault, length = DOWN, 102, rng.uniform(0.3, 0.8)  # a micro-stop
            elif pick < 0.8:
                state, fault, length = IDLE, 0, rng.uniform(1.0, 2.5)
            else:
                state, fault, length = SETUP, 0, rng.uniform(1.5, 2.5)
        if state == SETUP:
            # A changeover: new work order and a new lot of material.
            self._order_number += 1
            self._lot_number += 1
            snap.work_order, snap.lot = self._order(), self._lot()
            records.append({"kind": "work_order", "work_order": snap.work_order,
                            "lot": snap.lot, "good": snap.good, "scrap": snap.scrap})
        snap.state, snap.fault = state, fault
        self._segment_end = now + length
        records.append({"kind": "state", "from": STATE_NAMES[previous],
                        "to": STATE_NAMES[state], "code": state, "fault": fault or None,
                        "planned_s": round(length, 3)})
        return records
