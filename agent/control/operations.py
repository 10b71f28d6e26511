"""What `floorlink buffer ...` can do, written once for both ways in.

Each function takes an open Outbox and returns plain JSON-able data, so the
control socket and the direct path share every line. Replays, exports and
alarm acknowledgements append one line to the audit log: when, which OS user,
what, how many.
"""

from __future__ import annotations

import dataclasses
import pwd
from collections.abc import AsyncIterator, Sequence
from typing import Any

from buffer import LANE_CLASSES, BufferStats, DeadLetter, Outbox

from ..audit import audit
from ..events import format_time


def user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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
