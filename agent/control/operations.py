"""What `floorlink buffer ...` can do, written once for both ways in.

Each function takes an open Outbox and returns plain JSON-able data, so the
control socket and the direct path share every line. Replays, exports and
alarm acknowledgements append one line to the audit log: when, which OS user,
what, how many.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from buffer import LANE_CLASSES, BufferStats, DeadLetter, Outbox

from ..events import format_time

AUDIT_FILE = "audit.log"


def audit_path(outbox: Outbox) -> Path:
    return outbox.path.parent / AUDIT_FILE


def user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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


def stats_view(stats: BufferStats) -> dict[str, Any]:
    view = dataclasses.asdict(stats)
    view["backlog"] = {uplink: {LANE_CLASSES[lane]: n for lane, n in lanes.items()}
                       for uplink, lanes in stats.backlog.items()}
    view["oldest_pending_at"] = {uplink: format_time(at) if at else None
                                 for uplink, at in stats.oldest_pending_at.items()}
    view["alarms"] = [{**dataclasses.asdict(a), "raised_at": format_time(a.raised_at)}
                      for a in stats.alarms]
    return view


async def stats(outbox: Outbox) -> dict[str, Any]:
    return stats_view(await outbox.stats())


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    return {"uplink": letter.uplink, "event_id": letter.event_id, "type": letter.type,
            "subject": letter.subject, "class": LANE_CLASSES.get(letter.lane, "?"),
            "reason": letter.reason, "answer": letter.answer, "attempts": letter.attempts,
            "status": letter.status, "at": format_time(letter.at)}


async def dead_letters(outbox: Outbox, uplink: str | None, every_status: bool) -> list[Any]:
    letters = await outbox.dead_letters(uplink, None if every_status else "dead")
    return [letter_view(letter) for letter in letters]


async def replay(outbox: Outbox, ids: Sequence[str] | None, uplink: str | None,
                 user: str, via: str) -> int:
    count = await outbox.request_replay(ids, uplink)
    audit(outbox, user, via, "replay", count, ids=list(ids) if ids is not None else "all",
          uplink=uplink or "all")
    return count


async def export(outbox: Outbox, since: float, user: str, via: str) -> AsyncIterator[str]:
    """JSON lines: one CloudEvent per line, as it would be sent."""
    count = 0
    try:
        async for event in outbox.export(since):
            count += 1
            yield event.body
    finally:
        audit(outbox, user, via, "export", count, since=format_time(since))


async def clear_alarms(outbox: Outbox, key: str | None, user: str, via: str) -> int:
    count = await outbox.clear_alarm(key)
    audit(outbox, user, via, "clear-alarm", count, key=key or "all")
    return count
