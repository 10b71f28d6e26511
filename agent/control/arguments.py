"""The arguments of `floorlink buffer ...`; light, so building the CLI stays cheap."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from ..settings.durations import parse_duration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("stats", help="size, limits, backlog per uplink, drops, alarms")
    letters = actions.add_parser("dead-letters", help="events an uplink refused for good")
    letters.add_argument("--uplink")
    letters.add_argument("--all", action="store_true",
                         help="also the ones queued for replay or delivered by a replay")
    replay = actions.add_parser("replay", help="send dead letters again")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="EVENT_ID")
    which.add_argument("--all", action="store_true")
    replay.add_argument("--uplink", help="only this uplink's dead letters")
    export = actions.add_parser("export", help="buffered events as JSON lines")
    export.add_argument("--since", required=True,
                        help="RFC 3339 time (2026-11-23T08:00:00Z) or an age such as 2h or 7d")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    alarms = actions.add_parser("alarms", help="list alarms, or acknowledge them")
    clear = alarms.add_mutually_exclusive_group()
    clear.add_argument("--clear", metavar="KEY")
    clear.add_argument("--clear-all", action="store_true")
    for action in (letters, replay, export, alarms, actions.choices["stats"]):
        # `floorlink buffer stats -c FILE` reads naturally too; SUPPRESS keeps the
        # value given before the action when none is given after it.
        action.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS,
                            help="configuration file")


def parse_since(text: str) -> float:
    try:
        return time.time() - float(parse_duration(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--since {text!r}: give a time like 2026-11-23T08:00:00Z "
                         "or an age like 2h") from exc
    if moment.tzinfo is None:
        raise ValueError(f"--since {text!r}: add the time zone, e.g. 'Z' for UTC")
    return moment.timestamp()
