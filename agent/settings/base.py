"""Building blocks shared by the configuration models: identifiers, the strict base
model, event filters, TLS, and the timeouts and backoff of HTTP-based uplinks."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from ..events import EVENT_LANES
from .durations import Duration

Identifier = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64),
    Field(description="Letters, digits, '-' and '_'; starts with a letter or digit."),
]
TagRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9][A-Za-z0-9_-]*$"),
    Field(description="A tag of a device, written '<device id>.<tag name>'."),
]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Every type derivation makes, from the one table that gives each its lane.
EVENT_TYPES = tuple(EVENT_LANES)


class TlsSettings(Strict):
    """Certificate verification is on unless `insecure: true` (logged at every start)."""

    ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the server; default: the system's."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="Client private key (PEM).")
    insecure: bool = Field(
        default=False,
        description="Accept any server certificate and name. For a lab only; warned at start.",
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both, or neither")
        return self

    def files(self) -> dict[str, Path]:
        named = {"ca": self.ca_file, "client": self.cert_file}
        return {which: path for which, path in named.items() if path is not None}


def _event_filter(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(kind, pattern) for kind in EVENT_TYPES):
            raise ValueError(
                f"'{pattern}' matches no event type; types are: {', '.join(EVENT_TYPES)} "
                "(shell patterns such as 'downtime.*' work)")
    return patterns


EventFilter = Annotated[
    list[str],
    AfterValidator(_event_filter),
    Field(description="Event types this uplink receives ('downtime.*' style patterns)."),
]


class HttpTimeouts(Strict):
    connect: Duration = Field(default=5.0, gt=0)
    read: Duration = Field(default=30.0, gt=0)


class HttpBackoff(Strict):
    initial: Duration = Field(default=1.0, gt=0, le=60, description="First wait after a failure.")
    max: Duration = Field(
        default=30.0, gt=0, le=600,
        description="Longest wait between attempts (doubling with jitter up to this).",
    )
