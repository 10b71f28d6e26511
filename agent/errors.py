"""The one exception tree of floorlink.

    FloorlinkError
    ├── ConfigError            the configuration cannot be used; carries every issue found
    ├── BufferError            the local SQLite buffer cannot be opened or written
    ├── DriverError            talking to a PLC failed
    │   ├── DeviceUnreachable  connect or transport failure: retried with backoff
    │   └── TagReadError       one tag could not be read or decoded; other tags go on
    └── UplinkError            delivering upstream failed
        ├── UplinkUnavailable  transient: retried for as long as it takes
        └── UplinkRejected     permanent: the event goes to the dead-letter list

Third-party exceptions are translated at the edge with ``raise Ours(...) from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .redact import scrub


class FloorlinkError(Exception):
    """Base of every error floorlink raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located and explained."""

    file: str
    line: int | None
    path: str
    value: str | None
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        shown = f" = {self.value}" if self.value is not None else ""
        # A value read from ${env:}/${file:}/${cred:} is masked wherever it turns up.
        return scrub(f"{where}: {self.path or '(top level)'}{shown}\n    {self.message}")


class ConfigError(FloorlinkError):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(issue.render() for issue in issues))


class BufferError(FloorlinkError):
    pass


class BufferFull(BufferError):
    """No space for this write: the disk is full, or the buffer reached its ceiling. A
    smaller write may still fit."""


class DriverError(FloorlinkError):
    pass


class DeviceUnreachable(DriverError):
    pass


class TagReadError(DriverError):
    pass


class UplinkError(FloorlinkError):
    pass


class UplinkUnavailable(UplinkError):
    pass


class UplinkRejected(UplinkError):
    """`answer` is what the upstream said (a status line and a body excerpt), if anything."""

    def __init__(self, message: str, answer: str | None = None) -> None:
        super().__init__(message)
        self.answer = answer
