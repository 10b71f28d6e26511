"""What every part of derivation shares: the context events are made in, the emitter
that numbers them per lane, and the readers that turn PLC values into ints, flags, text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events import EVENT_LANES, Event, format_time, new_event_id, source_uri

iso = format_time


# The most values one telemetry.batch event carries: a scan of 5,000 tags is ten events of
# about 50 kB, not one that a broker's or middleware's size limit refuses.
MAX_BATCH_VALUES = 500


@dataclass(frozen=True)
class DeriveContext:
    site: str
    agent: str
    epoch: int
    new_id: Callable[[], str] = new_event_id
    # telemetry.events in the config: False, one telemetry event per value (per_tag); True,
    # one telemetry.batch event per subject per derivation step (batch).
    telemetry_batch: bool = False


class Emitter:
    def __init__(self, subject: str, sequences: dict[str, int], ctx: DeriveContext) -> None:
        self.subject, self.sequences, self.ctx = subject, sequences, ctx
        self._events: list[Event] = []
        self._batch: list[dict[str, Any]] = []  # telemetry values for this step's batch
        self._batch_at = 0.0
        self._last_at: tuple[float, str] = (-1.0, "")  # a scan's values share one time
        self.source = source_uri(ctx.site, ctx.agent, subject)
        self.batch_hold: bool | None = None  # the hold flag in the scan being applied, if read

    @property
    def events(self) -> list[Event]:
        """What this step emitted; a telemetry batch still gathering is emitted first."""
        if self._batch:
            self._emit_batch()
        return self._events

    def telemetry(self, at: float, value: dict[str, Any]) -> None:
        """One telemetry value: an event of its own, or a place in this step's batch."""
        if not self.ctx.telemetry_batch:
            self.emit("telemetry", at, value)
            return
        last_at, text = self._last_at
        if at != last_at:  # one strftime per scan time, not per value (profiled)
            text = format_time(at)
            self._last_at = (at, text)
        value["at"] = text
        self._batch.append(value)
        if at > self._batch_at:
            self._batch_at = at
        if len(self._batch) >= MAX_BATCH_VALUES:
            self._emit_batch()

    def _emit_batch(self) -> None:
        values, self._batch = self._batch, []
        at, self._batch_at = self._batch_at, 0.0
        self.emit("telemetry.batch", at, {"values": values})

    def emit(self, short_type: str, time: float, data: dict[str, Any],
             event_id: str | None = None) -> Event:
        lane = EVENT_LANES[short_type]
        sequence = self.sequences.get(lane.label, 0) + 1
        self.sequences[lane.label] = sequence
        event = Event(
            id=event_id or self.ctx.new_id(), type=short_type, source=self.source,
            subject=self.subject, time=time, lane=lane, sequence=sequence,
            epoch=self.ctx.epoch, data=data,
        )
        self._events.append(event)
        return event


def as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "off", "no")
    return bool(value)


def as_text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00")
    return text or None


def round_s(seconds: float) -> float:
    return round(seconds, 3)
