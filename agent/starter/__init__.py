"""`floorlink init`: a configuration for one PLC, annotated, to edit rather than write.

The demo's file describes a two-press line; a plant engineer with one PLC should not
have to cut it in half. Each starter names the allowed machine states beside
`state.map`, says where telemetry of tags no asset uses goes, and lists the commands
that come next. Both are loaded by the tests, so they stay valid.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

PROTOCOLS = ("modbus", "opcua")


def starter_text(protocol: str, target: str, unit: int = 1) -> str:
    """The annotated file for `protocol`, pointed at `target` (HOST[:PORT] for Modbus,
    an opc.tcp:// endpoint for OPC UA). ValueError saying what to write instead."""
    text = resources.files("agent.starter").joinpath(f"{protocol}.yaml").read_text("utf-8")
    if protocol == "modbus":
        host, port = _host_port(target)
        if not 0 <= unit <= 255:
            raise ValueError(f"--unit {unit}: a Modbus unit id is 0 to 255")
        return (text.replace("@HOST@", host).replace("@PORT@", str(port))
                .replace("@UNIT@", str(unit)))
    if not re.fullmatch(r"opc\.tcp://[^/\s]+(/\S*)?", target):
        raise ValueError(f"{target!r} is not an OPC UA endpoint; write e.g. "
                         "opc.tcp://10.0.0.5:4840")
    return text.replace("@ENDPOINT@", target)


def write_starter(path: Path, text: str, force: bool) -> None:
    """FileExistsError unless `force`: an edited configuration is never overwritten."""
    if path.exists() and not force:
        raise FileExistsError(path)
    path.write_text(text, encoding="utf-8")


def _host_port(target: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s\[\]]+)(?::(\d{1,5}))?", target)
    if match is None or (match.group(2) and not 0 < int(match.group(2)) < 65536):
        raise ValueError(f"{target!r} is not HOST or HOST:PORT; write e.g. 10.0.0.5 or "
                         "10.0.0.5:502")
    host = match.group(1).strip("[]")
    return host, int(match.group(2) or 502)
