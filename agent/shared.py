"""What both sides of the flow share: the sample a driver hands to derivation, the
operator's input the line page hands to it, and the backoff every retry loop waits by
(drivers, uplinks and the buffer's writer alike). A neutral room, so neither side
imports the other's."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

Quality = Literal["good", "uncertain", "bad"]


class Sample(NamedTuple):
    """One value of one tag. A NamedTuple: drivers make thousands a second."""

    device: str
    tag: str
    value: object
    quality: Quality
    source_time: float  # epoch seconds, UTC: the PLC's timestamp where it gives one
    # True for the first value of a tag after a (re)connect: whatever happened
    # while we could not see the PLC is unknown, and counter logic must say so.
    after_gap: bool = False
    # Where the value's integer type wraps (2**16 for a UInt16 or Int16), when the
    # protocol says it with the value (OPC UA's Variant type); None when it does not.
    wraps_at: int | None = None


# Drivers build hundreds of thousands of samples a second. `new_sample(Sample, (...all
# seven fields...))` is tuple.__new__, which skips the NamedTuple's own __new__, a Python
# function that fills in the defaults: 100 ns a sample against 270 ns. Give every field.
new_sample = tuple.__new__


@dataclass(frozen=True, eq=False)
class Classification:
    """An operator's reason for a stop, from the line page. It enters the pipeline's queue
    like a PLC sample (DESIGN.md, invariant 7): the pipeline, the buffer's single writer,
    derives `downtime.classified` and commits it with the asset's state, then answers
    `outcome` with what it did, or with ClassificationRefused saying why not."""

    asset: str
    downtime_id: str
    person: str
    code: int
    part: int = 1  # which part of a stop that was split (1 or 2)
    split_at: float | None = None  # split the stop here: `code` before, `second_code` after
    second_code: int | None = None
    outcome: asyncio.Future[str] | None = None


class ClassificationRefused(Exception):
    """What the operator is told when a classification cannot be taken."""


# What the pipeline's queue carries: a driver's read, or an operator's input.
QueueItem: TypeAlias = list[Sample] | Classification


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter, so a plant's worth of agents do not retry in step."""
    return random.uniform(base / 2, min(cap, base * 2 ** min(attempt, 16)))
