"""What every driver produces, and the small protocol it implements.

Connecting, retrying and health reporting live once, in `drivers.runner`; a
driver only knows how to open a session and how to yield samples from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from agent.shared import Quality, Sample, new_sample

__all__ = ["Driver", "Quality", "Sample", "new_sample"]

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
