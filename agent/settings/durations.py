"""Durations as plant engineers write them: "500ms", "30s", "5m", "2h", "7d", or plain seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

MIN_INTERVAL = 0.001  # polls, publishes and timeouts: under 1 ms is a typo, not a plan
MAX_DURATION = 366 * 86400.0  # a year: anything longer is a typo too

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> Any:
    """Return seconds as float; leave anything unparseable for pydantic to reject."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '500ms', '30s', '5m' or a number of seconds")
    if isinstance(value, int | float):
        return _bounded(float(value))
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(
                "expected a duration such as '500ms', '30s', '5m', '2h', '7d' "
                "or a number of seconds"
            )
        return _bounded(float(match.group(1)) * _UNITS[match.group(2)])
    return value


def _bounded(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError("a duration is at most a year (366d); write e.g. '30s', '5m' or '7d'")
    return seconds


DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"},
    ],
    "description": "A duration: '500ms', '30s', '5m', '2h', '7d', or a number of seconds.",
}

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    return f"{seconds / 60:g}m"
