"""Secret references in the YAML: ${env:NAME}, ${file:PATH}, ${cred:NAME}.

`${cred:NAME}` reads a systemd credential from $CREDENTIALS_DIRECTORY, which is
how `LoadCredential=` hands secrets to a hardened unit. A resolved secret is
never echoed: every path that held a reference is remembered and masked.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import redact
from .yamlsource import Path as DataPath

log = logging.getLogger("floorlink.config")

_REFERENCE = re.compile(r"\$\{(env|file|cred):([^}]*)\}")
MASK = "'***' (secret, masked)"
UNAVAILABLE_SECRET = "unavailable-secret"  # stands in where secrets are not required


@dataclass
class SecretResolution:
    data: Any
    secret_paths: set[DataPath] = field(default_factory=set)
    problems: list[tuple[DataPath, str, str]] = field(default_factory=list)  # path, reference, why


def resolve_secrets(data: Any, base_dir: Path,
                    placeholder: str | None = None) -> SecretResolution:
    """With a `placeholder`, a reference that cannot be resolved becomes it, silently."""
    result = SecretResolution(data=None)
    result.data = _walk(data, (), base_dir, result, placeholder)
    return result


def _walk(value: Any, path: DataPath, base_dir: Path, result: SecretResolution,
          placeholder: str | None) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), base_dir, result, placeholder)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), base_dir, result, placeholder)
                for i, v in enumerate(value)]
    if isinstance(value, str) and _REFERENCE.search(value):
        result.secret_paths.add(path)

        def substitute(match: re.Match[str]) -> str:
            kind, name = match.group(1), match.group(2).strip()
            resolved, why = _lookup(kind, name, base_dir)
            if resolved is None and placeholder is not None:
                return placeholder
            if resolved is None:
                result.problems.append((path, match.group(0), why))
                return ""
            # Masked by origin from here on, wherever the value lands: a misspelled key,
            # `url:`, an error message that quotes it.
            redact.register_value(resolved)
            return resolved

        return _REFERENCE.sub(substitute, value)
    return value


def _lookup(kind: str, name: str, base_dir: Path) -> tuple[str | None, str]:
    if not name:
        return None, f"the reference names nothing; write ${{{kind}:NAME}}"
    if kind == "env":
        if name not in os.environ:
            return None, f"environment variable {name} is not set; export it or use ${{file:PATH}}"
        return os.environ[name], ""
    if kind == "file":
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        warn_if_others_can_read(path, f"the secret file {path}")
        return _read_secret_file(path, f"file {path}")
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not credentials:
        return None, (
            f"credential {name} needs $CREDENTIALS_DIRECTORY, which systemd sets when the unit "
            f"has LoadCredential={name}:/path/to/secret"
        )
    return _read_secret_file(Path(credentials) / name, f"credential {name}")


def warn_if_others_can_read(path: Path, what: str) -> None:
    """A secret any user of the box can read is no secret: say so (the file still works,
    so a box set up by hand keeps running while someone fixes it)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reading it will say what is wrong
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("every user", stat.S_IROTH))
               if mode & bit]
    if readers:
        log.warning("%s is readable by %s (mode %s): run chmod 600 %s, or hand it to the "
                    "service with LoadCredential= and write ${cred:NAME}", what,
                    " and ".join(readers), oct(stat.S_IMODE(mode)), path)


def _read_secret_file(path: Path, what: str) -> tuple[str | None, str]:
    try:
        # A trailing newline from `echo secret > file` is never part of a password.
        return path.read_text(encoding="utf-8").rstrip("\r\n"), ""
    except OSError as exc:
        return None, f"{what} cannot be read: {exc.strerror or exc}"
