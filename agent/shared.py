"""What both sides of the flow share: the sample a driver hands to derivation, and the
backoff every retry loop waits by (drivers, uplinks and the buffer's writer alike).
A neutral room, so neither side imports the other's."""

from __future__ import annotations

import random
from typing import Literal, NamedTuple

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


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter, so a plant's worth of agents do not retry in step."""
    return random.uniform(base / 2, min(cap, base * 2 ** min(attempt, 16)))
