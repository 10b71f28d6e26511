"""Logging set-up: readable text on a terminal, one JSON object per line for journald.

A record about one event carries its id (`extra={"event_id": ...}`), so a line in the
journal leads straight to the event in the buffer and at the ERP. Every line is
scrubbed of the configuration's secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from .redact import scrub, scrub_values

# Attributes every LogRecord has; anything else was passed as `extra` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # Masked before encoding: JSON escapes a `"`, `\` or control character inside a
        # secret, and the escaped text no longer matches the secret.
        return json.dumps(scrub_values(entry), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        event_id = getattr(record, "event_id", None)
        if event_id and str(event_id) not in text:
            text += f" [event {event_id}]"
        return scrub(text)


class ProtocolNoise(logging.Filter):
    """asyncio logs every frame a protocol library fails to decode as a fatal error with a
    traceback: from a PLC sending broken frames, pymodbus's several a second. The Modbus
    driver names the condition once, in the plant's words (see drivers/modbus/bus.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not type(error).__module__.startswith("pymodbus")


def setup(level: str, log_format: str = "auto") -> None:
    """`auto` is JSON under systemd (journald gives JOURNAL_STREAM), text elsewhere."""
    if log_format == "auto":
        log_format = "json" if os.environ.get("JOURNAL_STREAM") else "text"
    handler = logging.StreamHandler(sys.stdout if log_format == "json" else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(FloodGuard())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Protocol libraries log every frame or reconnect attempt; our runners log each
    # transition once (down, recovered) with the cause.
    # pymodbus logs a malformed or mismatched frame at ERROR, with a traceback, on every
    # poll (several a second); the driver reports the condition once, in its own words.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    # Even at --log-level debug: one line per SQL statement or HTTP frame buries ours.
    for chatty in ("aiosqlite", "httpcore", "asyncio"):
        logging.getLogger(chatty).setLevel(max(logging.INFO, root.level))
    noise = logging.getLogger("asyncio")
    if not any(isinstance(f, ProtocolNoise) for f in noise.filters):
        noise.addFilter(ProtocolNoise())
    # httpx logs every request at INFO ("HTTP Request: POST ... 200 OK"): two thirds of an
    # Odoo uplink's lines. The uplinks say what matters: failures, pauses, recoveries.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))


class Summary:
    """One line per condition: the first occurrence is logged at once, the ones that follow
    within `interval` are counted and logged as one line when it ends. A flood (a client
    opening thousands of connections, a password tried thousands of times) leaves a few
    lines that say how much, not a line per attempt.

    `template` takes the count and the condition's text: "refused %d connection(s): %s".
    """

    MAX_CONDITIONS = 256  # conditions keyed by something an outsider picks stay bounded

    def __init__(self, logger: logging.Logger, template: str, interval: float = 60.0,
                 level: int = logging.WARNING) -> None:
        self.logger, self.template, self.interval, self.level = (
            logger, template, interval, level)
        self._pending: dict[str, int] = {}  # condition -> count not yet logged
        self._quiet_until: dict[str, float] = {}

    def count(self, condition: str) -> None:
        now = time.monotonic()
        if now >= self._quiet_until.get(condition, 0.0):
            if len(self._quiet_until) >= self.MAX_CONDITIONS:
                self._forget_expired(now)
            self._quiet_until[condition] = now + self.interval
            self.logger.log(self.level, self.template, 1, condition)
            self._schedule(condition)
            return
        self._pending[condition] = self._pending.get(condition, 0) + 1

    def flush(self, condition: str) -> None:
        count = self._pending.pop(condition, 0)
        if count:
            self.logger.log(self.level, self.template + f" (in the last {self.interval:g} s)",
                            count, condition)

    def _schedule(self, condition: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # outside a loop the count is logged with the next occurrence
        loop.call_later(self.interval, self.flush, condition)

    def _forget_expired(self, now: float) -> None:
        for condition, until in list(self._quiet_until.items()):
            if until <= now:
                del self._quiet_until[condition]
                self.flush(condition)


class FloodGuard(logging.Filter):
    """Caps how often one line (one logger, one message template) is written: `burst` lines
    per `interval`, then one line saying how many were held back. asyncio, for one, logs
    "Too many open files" on every accept attempt when descriptors run out: 168,866 lines
    in a minute on a box under a connection flood, and journald's rate limit then drops
    the lines that mattered."""

    def __init__(self, burst: int = 20, interval: float = 60.0) -> None:
        super().__init__()
        self.burst, self.interval = burst, interval
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [start, lines, held]
        self._sweep_at = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "flood_summary", False):
            return True
        now = time.monotonic()
        if now >= self._sweep_at:
            self._sweep(now)
        key = (record.name, str(record.msg)[:200])
        window = self._windows.setdefault(key, [now, 0, 0])
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False

    def _sweep(self, now: float) -> None:
        self._sweep_at = now + 1.0
        for key, (start, _, held) in list(self._windows.items()):
            if now - start < self.interval:
                continue
            del self._windows[key]
            if held:
                logging.getLogger(key[0]).warning(
                    "%d more lines like %r held back in %g s", int(held), key[1],
                    self.interval, extra={"flood_summary": True})
