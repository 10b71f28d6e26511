"""Which build is running: the package version and the git commit it was built from.

scripts/build-deb writes `agent/build.json` into the wheel it packages; a checkout has
none, and says so. Both `floorlink --version` and the status page show it, so a
technician can tell which .deb a plant box runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from . import __version__


@dataclass(frozen=True)
class Build:
    version: str  # the Python package's
    package: str | None  # the Debian package's, e.g. 0.1.0-1
    commit: str | None  # the git commit it was built from

    def describe(self) -> str:
        if self.package is None:
            return f"floorlink {self.version} (from a source checkout)"
        return f"floorlink {self.package} (commit {self.commit or 'unknown'})"


@cache
def this_build() -> Build:
    try:
        raw = json.loads(resources.files("agent").joinpath("build.json").read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return Build(__version__, None, None)
    return Build(__version__, str(raw.get("package") or "") or None,
                 str(raw.get("commit") or "") or None)
