"""Is the system clock synchronised? Event times are only as good as this answer.

The kernel knows (adjtimex, read-only with modes 0). Under the unit's system call
filter adjtimex is refused with EPERM; then timedated, over D-Bus, is asked instead.
The answer is cached: it changes over minutes, and the page refreshes every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

CACHE_SECONDS = 60.0
TIME_ERROR = 5  # adjtimex: the clock is not synchronised
TIMEX_SIZE = 512  # struct timex is 208 bytes on 64-bit Linux; leave room


@dataclass
class ClockStatus:
    synchronized: bool | None  # None: could not tell
    source: str
    checked_at: float

    def view(self) -> dict[str, object]:
        return {"synchronized": self.synchronized, "source": self.source}


def _kernel_says() -> bool | None:
    # Imported here: ctypes costs an idle agent about 0.3 MB, and only this asks.
    # CDLL(None) is the running program's own symbols, libc's among them, with no
    # ldconfig subprocess as find_library("c") would start.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    timex = ctypes.create_string_buffer(TIMEX_SIZE)  # modes = 0: only read
    state = int(libc.adjtimex(timex))
    if state < 0:
        return None
    return state != TIME_ERROR


async def _timedated_says() -> bool | None:
    try:
        process = await asyncio.create_subprocess_exec(
            "timedatectl", "show", "--property=NTPSynchronized", "--value",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(3.0):
            out, _ = await process.communicate()
    except (OSError, TimeoutError):
        return None
    answer = out.decode().strip()
    return {"yes": True, "no": False}.get(answer)


class ClockWatch:
    def __init__(self) -> None:
        self.status = ClockStatus(None, "not checked yet", 0.0)

    async def refresh(self) -> ClockStatus:
        if time.time() - self.status.checked_at < CACHE_SECONDS:
            return self.status
        synced, source = _kernel_says(), "kernel (adjtimex)"
        if synced is None:
            synced, source = await _timedated_says(), "systemd-timedated"
        if synced is None:
            source = "unknown: neither adjtimex nor timedatectl answered"
        self.status = ClockStatus(synced, source, time.time())
        return self.status
