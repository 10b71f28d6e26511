"""An operator's reason for a stop: the input, the asset's state and the stop's record in,
`downtime.classified` events out. No I/O: the pipeline reads the stop's record from the
buffer's history and commits what this returns, with the state, in one transaction.

A stop has one part, or two once an operator splits it at a time of their choosing. Each
part's effective reason is its last classification: every event names the one it
replaces, so a receiver that sees both keeps the later (its sequence is higher).

    open stop     classify: the reason replaces the PLC's in the open downtime, and
                  downtime.ended carries it. No split: the end is not known yet.
    closed stop   classify the whole stop (or one part of a split stop); or split it in
                  two at a time inside it, each side with its own reason. A split stop
                  stays split; splitting it again moves the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..events import Event
from ..shared import Classification, ClassificationRefused
from .emit import DeriveContext, Emitter, iso
from .spec import AssetSpec
from .state import AssetState

MIN_PART_S = 1.0  # each side of a split covers at least this long


@dataclass(frozen=True)
class Part:
    """One part of a classified stop and what made it so."""

    start: float
    end: float | None
    code: int
    reason: str
    group: str | None
    by: str
    event: str  # the downtime.classified event that set it

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "code": self.code,
                "reason": self.reason, "group": self.group, "by": self.by, "event": self.event}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Part:
        return cls(float(raw["start"]), None if raw.get("end") is None else float(raw["end"]),
                   int(raw["code"]), str(raw["reason"]), raw.get("group"), str(raw["by"]),
                   str(raw["event"]))


@dataclass(frozen=True)
class KnownDowntime:
    """A stop as the history records it (buffer/downtimes.py)."""

    id: str
    asset: str
    started_at: float
    ended_at: float | None
    plc_code: int | None  # the PLC's reason code, if it gave one
    plc_reason: str | None
    work_order: str | None
    parts: tuple[Part, ...] = field(default=())  # empty until an operator classifies it

    @classmethod
    def stored(cls, downtime_id: str, asset: str, start: float, end: float | None,
               work_order: str | None, detail: dict[str, Any]) -> KnownDowntime:
        """From the history's row of the stop (buffer/downtimes.py) and its `detail`."""
        return cls(downtime_id, asset, start, end, detail.get("plc_code"),
                   detail.get("plc_reason"), work_order,
                   tuple(Part.from_json(p) for p in detail.get("parts") or [] if p))


def apply_classification(spec: AssetSpec, state: AssetState, known: KnownDowntime | None,
                         choice: Classification, now: float, ctx: DeriveContext
                         ) -> tuple[AssetState, list[Event], KnownDowntime | None]:
    """The new state, the events, and the stop's record as they leave it.
    ClassificationRefused, saying what to do, when the choice cannot be taken."""
    new = state.copy()
    out = Emitter(spec.id, new.sequences, ctx)
    open_downtime = new.downtime
    if open_downtime is not None and open_downtime.id == choice.downtime_id:
        if choice.split_at is not None:
            raise ClassificationRefused("This stop is still going on: it can be split once "
                                        "it has ended.")
        first = _choice(spec, choice.code)
        plc = (open_downtime.plc_reason_code if open_downtime.classified_by
               else open_downtime.reason_code)
        event = out.emit("downtime.classified", now, _data(
            spec, choice.downtime_id, open_downtime.started_at, None, 1, 1, choice.code,
            first, choice.person, plc, open_downtime.classified_event,
            open_downtime.work_order))
        if open_downtime.classified_by is None:
            open_downtime.plc_reason_code = open_downtime.reason_code
            open_downtime.plc_reason = open_downtime.reason
        open_downtime.reason_code, open_downtime.reason = choice.code, first[0]
        open_downtime.classified_by, open_downtime.classified_event = choice.person, event.id
        part = Part(open_downtime.started_at, None, choice.code, first[0], first[1],
                    choice.person, event.id)
        after = known and replace(known, parts=(part,))
        return new, out.events, after
    if known is None or known.asset != spec.id:
        raise ClassificationRefused("This stop is no longer listed: it is older than the "
                                    "previous shift. Reload the page.")
    if known.ended_at is None:
        raise ClassificationRefused("This stop has no end in the records (the agent was "
                                    "restarted while it went on); it cannot be classified.")
    first = _choice(spec, choice.code)
    if choice.split_at is None:
        return new, out.events, _classify_part(spec, known, choice, first, now, out)
    return new, out.events, _split(spec, known, choice, first, now, out)


def _classify_part(spec: AssetSpec, known: KnownDowntime, choice: Classification,
                   reason: tuple[str, str | None], now: float, out: Emitter) -> KnownDowntime:
    parts = list(known.parts)
    count = max(len(parts), 1)
    if choice.part not in range(1, count + 1):
        raise ClassificationRefused(f"This stop has {count} part(s), not {choice.part}. "
                                    "Reload the page.")
    index = choice.part - 1
    start, end = ((parts[index].start, parts[index].end) if len(parts) == 2
                  else (known.started_at, known.ended_at))
    previous = parts[index].event if index < len(parts) else None
    event = out.emit("downtime.classified", now, _data(
        spec, known.id, start, end, choice.part, count, choice.code, reason, choice.person,
        known.plc_code, previous, known.work_order))
    part = Part(start, end, choice.code, reason[0], reason[1], choice.person, event.id)
    parts = parts or [part]
    parts[index] = part
    return replace(known, parts=tuple(parts))


def _split(spec: AssetSpec, known: KnownDowntime, choice: Classification,
           first: tuple[str, str | None], now: float, out: Emitter) -> KnownDowntime:
    assert choice.split_at is not None
    assert known.ended_at is not None
    at = choice.split_at
    if not known.started_at + MIN_PART_S <= at <= known.ended_at - MIN_PART_S:
        raise ClassificationRefused(
            f"Split the stop at a time between {_clock(known.started_at)} and "
            f"{_clock(known.ended_at)} UTC, at least {MIN_PART_S:.0f} s inside it.")
    if choice.second_code is None:
        raise ClassificationRefused("A split needs a reason for each part: choose the second.")
    second = _choice(spec, choice.second_code)
    parts = known.parts
    ranges = ((known.started_at, at, choice.code, first), (at, known.ended_at,
                                                         choice.second_code, second))
    made: list[Part] = []
    for number, (start, end, code, reason) in enumerate(ranges, 1):
        previous = parts[number - 1].event if number - 1 < len(parts) else None
        event = out.emit("downtime.classified", now, _data(
            spec, known.id, start, end, number, 2, code, reason, choice.person,
            known.plc_code, previous, known.work_order))
        made.append(Part(start, end, code, reason[0], reason[1], choice.person, event.id))
    return replace(known, parts=tuple(made))


def _choice(spec: AssetSpec, code: int) -> tuple[str, str | None]:
    reason = spec.operator_reasons.get(code)
    if reason is None:
        raise ClassificationRefused(f"Reason {code} is not in the reason list of "
                                    f"{spec.id}. Reload the page.")
    return reason


def _data(spec: AssetSpec, downtime_id: str, start: float, end: float | None, part: int,
          parts: int, code: int, reason: tuple[str, str | None], person: str,
          plc_code: int | None, replaces: str | None, work_order: str | None
          ) -> dict[str, Any]:
    return {
        "downtime_id": downtime_id,
        "started_at": iso(start),
        "ended_at": iso(end) if end is not None else None,
        "part": part,
        "parts": parts,
        "reason_code": code,
        "reason": reason[0],
        "reason_group": reason[1],
        "classified_by": person,
        # The PLC had named a reason for this stop, and the operator's replaces it.
        "replaces_plc_reason": bool(plc_code),
        "plc_reason_code": plc_code or None,
        "replaces": replaces,
        "work_order": work_order,
    }


def _clock(epoch: float) -> str:
    return iso(epoch)[11:19]
