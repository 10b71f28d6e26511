"""Room to move when the disk fills up.

In WAL mode even a DELETE is a write: it appends pages to the write-ahead log
before it frees any. On a disk that is full to the last block, the buffer then
cannot drop its oldest telemetry to make room for business events, and a
checkpoint cannot fold the log back into the file: nothing moves until a
restart (measured on a 16 MB tmpfs: 1,015 business rows and then a stall).

So the buffer keeps a reserve, a file of `reserve_bytes` beside it, taken while
space is plentiful. When a write finds the disk full, the reserve is released;
that room lets a checkpoint fold the log into the file and truncate it, and
lets retention delete the oldest telemetry, whose freed pages new events then
reuse without growing the file (the same tmpfs: 3,495 business rows, until no
telemetry was left to drop). The reserve must hold what the log may need to fold
into the file (it checkpoints at 4 MB), and it is taken again once it fits with
HEADROOM to spare.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("floorlink.buffer")

# Free space left to the buffer beyond the reserve before the reserve is taken again: the
# write-ahead log grows up to 4 MB between checkpoints.
HEADROOM = 8 * 1024 * 1024


class Reserve:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def held(self) -> bool:
        return self.size > 0 and self.path.is_file()

    def take(self) -> bool:
        """Hold the reserve if the disk has room for it and HEADROOM; True when held."""
        if self.size <= 0 or self.held:
            return self.held
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return False
        if stat.f_bavail * stat.f_frsize < self.size + HEADROOM:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # Real blocks, not a sparse file: the point is that they are ours.
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.warning("cannot set aside the buffer's disk reserve %s: %s", self.path, exc)
            return False
        return True

    def release(self) -> bool:
        """Give the reserve back to the disk; True if there was one to give."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("cannot release the buffer's disk reserve %s: %s", self.path, exc)
            return False
        log.warning("the disk of the buffer is full: released its %d-byte reserve so that "
                    "the oldest telemetry can be dropped and business events still fit",
                    self.size)
        return True
