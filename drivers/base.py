"""What every driver produces, and the small protocol it implements.

Connecting, retrying and health reporting live once, in `drivers.runner`; a
driver only knows how to open a session and how to yield samples from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, NamedTuple, Protocol

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


class Driver(Protocol):
    """One PLC connection. `session()` yields batches until the connection fails."""

    device_id: str

    async def open(self) -> None:
        """Connect; raise `DeviceUnreachable` when the device cannot be reached."""

    def batches(self) -> AsyncIterator[list[Sample]]:
        """Yield sample batches; raise `DeviceUnreachable` when the session dies."""
        ...

    async def close(self) -> None:
        """Release the connection; never raises."""
