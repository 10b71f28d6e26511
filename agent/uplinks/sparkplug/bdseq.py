"""The Edge Node's bdSeq, kept across agent restarts.

Each MQTT session's will is an NDEATH with the session's bdSeq, and a host pairs deaths
with births by it. After a kill -9 the broker publishes the old session's NDEATH only
when it notices the dead socket, possibly after the new session's NBIRTH: if the new
session reused the number, the host would take the late death for the new session's.
So the number goes on from the last one used (Sparkplug 3.0: each CONNECT's bdSeq is one
more than the previous, 0 to 255), and it is on disk before the CONNECT that carries it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("floorlink.sparkplug")


class BdSeqStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False
        self._kept: int | None = None  # the value on disk, once this store wrote it

    def next(self) -> int:
        """The bdSeq after the last one used; 0 when none was kept (or it is unreadable)."""
        try:
            last = int(self.path.read_text(encoding="ascii").strip())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("Sparkplug: %s is not readable (%s); bdSeq starts at 0", self.path, exc)
            return 0
        return (last + 1) % 256 if 0 <= last <= 255 else 0

    def save(self, value: int) -> None:
        """Keep `value`, atomically; nothing to do if it is what this store last kept
        (every connection attempt asks). A disk that refuses (full, read-only) costs
        only the pairing described above, so it is a warning, once, and the session goes
        on; the next attempt tries again."""
        if value == self._kept:
            return
        part = self.path.with_name(self.path.name + ".part")
        try:
            with open(part, "w", encoding="ascii") as file:
                file.write(f"{value}\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(part, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                part.unlink()  # a partial file is no use, and takes room
            if not self._warned:
                log.warning("Sparkplug: bdSeq %d could not be kept in %s (%s); after a "
                            "restart the node may reuse a recent bdSeq", value, self.path, exc)
                self._warned = True
            return
        self._warned = False
        self._kept = value
