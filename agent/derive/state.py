"""Derivation state: everything needed to continue exactly after a restart.

It is committed in the same SQLite transaction as the events it produced, so
after a crash the state and the events always agree.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..events import has_non_finite

# Device states share the buffer's state table with assets' (keyed by asset id); ':' is in
# no identifier, so the two cannot collide.
DEVICE_KEY = "device:"


@dataclass
class ReasonChange:
    at: float
    reason_code: int | None
    reason: str


@dataclass
class OpenDowntime:
    id: str
    started_at: float
    start_estimated: bool
    reason_code: int | None
    reason: str
    work_order: str | None
    reason_changes: list[ReasonChange] = field(default_factory=list)
    # An operator's classification (the line page) while the stop is open: its reason
    # replaces the PLC's, which is kept here; downtime.ended carries the operator's.
    classified_by: str | None = None
    classified_event: str | None = None
    plc_reason_code: int | None = None
    plc_reason: str | None = None


@dataclass
class OpenHold:
    id: str
    raised_at: float
    lot: str | None
    reason: str | None
    quantity: float | None
    work_order: str | None


@dataclass
class TelemetryMemory:
    seen: bool = False
    value: Any = None  # latest value and quality
    quality: str = "good"
    published: bool = False
    published_value: Any = None
    published_quality: str = "good"
    published_at: float | None = None  # source time of the last on-change event
    every_at: float | None = None  # agent time of the last periodic event
    held_back: bool = False  # a change waiting out min_interval

    def same_as(self, other: TelemetryMemory) -> bool:
        """Nothing to store again: equal fields, and values of the same type (True is not
        1, 1.0 is not 1: a birth after a restart must give the type the PLC gave)."""
        return (self.__dict__ == other.__dict__ and type(self.value) is type(other.value)
                and type(self.published_value) is type(other.published_value))

    def clone(self) -> TelemetryMemory:
        # Scalars only, so a shallow copy is independent. Built directly: copy.copy goes
        # through __reduce_ex__ and cost ~7 µs per tag per commit (profiled, 5,000 tags).
        # Handing over a copied dict is 250 ns against 400 for filling the new one with
        # update(), at the same size (224 bytes a memory, tracemalloc).
        twin = object.__new__(TelemetryMemory)
        twin.__dict__ = self.__dict__.copy()
        return twin


@dataclass
class AssetState:
    machine_state: str | None = None
    state_code: int | None = None
    state_since: float | None = None
    # The state tag's device stopped delivering at this time (its last sample): the
    # state is not known since. Not a machine state: no event, only the shift history.
    no_data_since: float | None = None
    data_resumed_at: float | None = None  # the first sample after no data (history's cue)
    # The end of the last shift reported by shift.completed (or, on a first start, the
    # start of the shift the agent came up in: a shift it did not see from its start is
    # not reported).
    shift_reported_until: float | None = None
    # A new state waiting out the minimum dwell time.
    candidate_state: str | None = None
    candidate_code: int | None = None
    candidate_since: float | None = None
    candidate_estimated: bool = False
    candidate_seen_locally: float | None = None
    # Down-class state entered but not yet past the micro-stop threshold.
    down_since: float | None = None
    down_since_estimated: bool = False
    down_seen_locally: float | None = None  # agent clock, for the threshold timer
    # The stop's reason before it is a downtime: the fault code present when the down
    # state was entered, else the first one seen since; and the codes that followed.
    down_reason: int | None = None
    down_reason_changes: list[ReasonChange] = field(default_factory=list)
    downtime: OpenDowntime | None = None
    micro_stops: int = 0  # since the last confirmation, when summarised
    micro_stop_s: float = 0.0
    hold_active: bool | None = None
    hold: OpenHold | None = None
    # Latest context values.
    reason_code: int | None = None
    work_order: str | None = None
    lot: str | None = None
    production_lot: str | None = None
    hold_reason: str | None = None
    hold_quantity: float | None = None
    # Fault tracking for maintenance requests.
    fault_since: float | None = None
    fault_seen_locally: float | None = None
    fault_requested: bool = False
    fault_history: dict[str, list[float]] = field(default_factory=dict)  # code -> times
    # Counters: which tag, last raw value, quantities not yet confirmed, work-order totals.
    counter_tags: dict[str, str] = field(default_factory=dict)
    counter_last: dict[str, int] = field(default_factory=dict)
    counter_max_step: dict[str, int] = field(default_factory=dict)  # largest exact increment
    counter_last_at: dict[str, float] = field(default_factory=dict)  # source time of the last
    counter_max_rate: dict[str, float] = field(default_factory=dict)  # fastest parts/s seen
    counter_suspect: dict[str, bool] = field(default_factory=dict)  # last reading held back
    held_back: list[dict[str, Any]] = field(default_factory=list)  # for the next confirmation
    pending: dict[str, int] = field(default_factory=lambda: {"good": 0, "scrap": 0})
    pending_estimated: bool = False
    pending_gap: dict[str, str] | None = None  # {from, to}: an order changed in this gap
    last_seen_at: float | None = None  # source time of the latest sample applied
    interval_start: float | None = None
    last_shift_boundary: float | None = None
    last_snapshot: float | None = None
    totals: dict[str, int] = field(default_factory=lambda: {"good": 0, "scrap": 0})
    totals_work_order: str | None = None
    telemetry: dict[str, TelemetryMemory] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)  # lane label -> last sequence

    def to_json(self) -> str:
        """The whole state, telemetry memories in it, as the buffer gives it back."""
        return _dumps(self, non_finite=_holds_non_finite(self.telemetry))

    def document_json(self) -> str:
        """The state as committed: without its telemetry memories, which are stored in
        rows of their own (memories_json)."""
        return _dumps(_without_telemetry(self))

    @classmethod
    def from_json(cls, text: str) -> AssetState:
        raw: dict[str, Any] = json.loads(text)
        downtime = raw.pop("downtime", None)
        hold = raw.pop("hold", None)
        pending = [ReasonChange(**c) for c in raw.pop("down_reason_changes", [])]
        telemetry = raw.pop("telemetry", {}) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in raw.items() if k in known})
        if downtime:
            changes = [ReasonChange(**c) for c in downtime.pop("reason_changes", [])]
            state.downtime = OpenDowntime(**downtime, reason_changes=changes)
        state.hold = OpenHold(**hold) if hold else None
        state.down_reason_changes = pending
        state.telemetry = {tag: TelemetryMemory(**m) for tag, m in telemetry.items()}
        return state

    def copy(self) -> AssetState:
        """An independent copy: derivation mutates it, the committed original stays."""
        new = copy.copy(self)
        new.downtime = copy.deepcopy(self.downtime)
        new.down_reason_changes = list(self.down_reason_changes)
        new.hold = copy.copy(self.hold)
        new.fault_history = {code: list(times) for code, times in self.fault_history.items()}
        new.counter_tags, new.counter_last = dict(self.counter_tags), dict(self.counter_last)
        new.counter_max_step, new.pending = dict(self.counter_max_step), dict(self.pending)
        new.counter_last_at, new.counter_max_rate = (dict(self.counter_last_at),
                                                     dict(self.counter_max_rate))
        new.counter_suspect, new.held_back = dict(self.counter_suspect), list(self.held_back)
        new.totals, new.sequences = dict(self.totals), dict(self.sequences)
        new.telemetry = _copy_memories(self.telemetry)
        return new


@dataclass
class DeviceState:
    """Telemetry memory and sequences of a device's unbound tags, and whether it delivers."""

    telemetry: dict[str, TelemetryMemory] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    # The last sample's time when the device stopped delivering; None while it delivers.
    offline_since: float | None = None

    def to_json(self) -> str:
        """The whole state, telemetry memories in it, as the buffer gives it back."""
        return _dumps(self, non_finite=_holds_non_finite(self.telemetry))

    def document_json(self) -> str:
        """The state as committed, without its telemetry memories (see AssetState)."""
        return _dumps(_without_telemetry(self))

    @classmethod
    def from_json(cls, text: str) -> DeviceState:
        raw = json.loads(text)
        return cls({t: TelemetryMemory(**m) for t, m in raw.get("telemetry", {}).items()},
                   dict(raw.get("sequences", {})), raw.get("offline_since"))

    def copy(self) -> DeviceState:
        return DeviceState(_copy_memories(self.telemetry), dict(self.sequences),
                           self.offline_since)


def _copy_memories(memories: dict[str, TelemetryMemory]) -> dict[str, TelemetryMemory]:
    """Copy on write: the copy shares the memories, and derivation replaces a memory with
    its clone before changing it (see telemetry.writable_memory). Cloning all of them cost
    O(tags) per commit: a fifth of the agent's time at 5,000 tags."""
    return dict(memories)


def _fields(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value):
        return vars(value)
    raise TypeError(f"{type(value).__name__} is not part of the derivation state")


def memories_json(memories: dict[str, TelemetryMemory]) -> str:
    """A JSON object of tag -> memory, as a row of buffer/states.py stores them."""
    return _dumps(memories, non_finite=_holds_non_finite(memories))


def _without_telemetry(state: AssetState | DeviceState) -> dict[str, Any]:
    document = dict(vars(state))
    del document["telemetry"]
    return document


def _dumps(state: Any, non_finite: bool = False) -> str:
    """JSON of a state or a memory. orjson writes the dataclasses itself, a fraction of
    the standard library's time. A PLC value that is NaN or infinite must come back as
    itself after a restart, and orjson would write it as null: what holds one is written
    by the standard library, whose NaN and Infinity json.loads reads back. Only telemetry
    memories hold PLC values as they came; counters and times are checked numbers."""
    if not non_finite:
        try:
            return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:
            pass  # what orjson will not write (an integer past 64 bits): as before
    return json.dumps(state, default=_fields, separators=(",", ":"))


def _holds_non_finite(memories: dict[str, TelemetryMemory]) -> bool:
    for memory in memories.values():
        for value in (memory.value, memory.published_value):
            kind = type(value)
            # The common kinds first, without a call: this runs for every memory written.
            if kind is int or kind is str or kind is bool or value is None:
                continue
            if kind is float:
                if not math.isfinite(value):
                    return True
            elif has_non_finite(value):
                return True
    return False
