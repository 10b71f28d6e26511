"""A token bucket: replay after an outage must not flood the upstream.

`rate` events per second on average, bursts up to `burst`. Quality holds do
not wait for tokens (they must arrive within a second), but they spend them.
"""

from __future__ import annotations

import asyncio
import time


class Pacer:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self) -> None:
        if not self.rate:
            return
        self._refill()
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self.rate)
            self._refill()
        self._tokens -= 1

    def spend(self) -> None:
        """Count an event that could not wait."""
        if self.rate:
            self._refill()
            self._tokens -= 1
