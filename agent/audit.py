"""The audit log: one JSON line for each thing a person did to the agent's data (a
replay, an export, an acknowledged alarm, a stop classified at the line page): when,
who, by which way in, what, how many. It sits beside the buffer, and rotates once."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .events import format_time

if TYPE_CHECKING:
    from buffer import Outbox

AUDIT_FILE = "audit.log"


def audit_path(outbox: Outbox) -> Path:
    return outbox.path.parent / AUDIT_FILE


AUDIT_ROTATE_BYTES = 1_000_000  # then audit.log becomes audit.log.1 (the one before goes)
AUDIT_IDS = 20  # event ids one audit line names; the count says how many there were


def audit(outbox: Outbox, user: str, via: str, action: str, count: int,
          **what: Any) -> None:
    """Append one line; O_APPEND keeps concurrent lines whole."""
    ids = what.get("ids")
    if isinstance(ids, list) and len(ids) > AUDIT_IDS:
        what = {**what, "ids": ids[:AUDIT_IDS], "ids_not_listed": len(ids) - AUDIT_IDS}
    line = json.dumps({"at": format_time(time.time()), "user": user, "via": via,
                       "action": action, "count": count, **what}, sort_keys=True)
    path = audit_path(outbox)
    try:
        if path.stat().st_size > AUDIT_ROTATE_BYTES:
            os.replace(path, path.with_name(AUDIT_FILE + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
