"""Logging set-up: readable text on a terminal, one JSON object per line for journald.

A record about one event carries its id (`extra={"event_id": ...}`), so a line in the
journal leads straight to the event in the buffer and at the ERP. Every line is
scrubbed of the configuration's secrets.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from .redact import scrub

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
        return scrub(json.dumps(entry, ensure_ascii=False))


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
