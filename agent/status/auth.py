"""Who may read the status page when it is reachable beyond this machine.

The credentials file holds `user:password` lines (blank lines and `#` comments
allowed), readable by the service alone: with systemd, a LoadCredential= file.
A phone's browser can send HTTP basic auth; or a technician opens the page once
as `/?token=<password>` (a QR code on the cabinet), which sets a session cookie and
sends the browser on to the page without the token in its address bar.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from ..settings.models import Config

SESSION_COOKIE = "floorlink_session"
SESSION_SECONDS = 12 * 3600  # one shift and a half


def load_credentials(path: Path) -> dict[str, str]:
    """user -> password; ValueError saying what to fix."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or len(password) < 12:
            raise ValueError(f"{path} line {number}: write `user:password`, with a password of "
                             "at least 12 characters")
        users[user] = password
    if not users:
        raise ValueError(f"{path} holds no `user:password` line")
    return users


def status_users(config: Config) -> dict[str, str] | None:
    """The status page's logins; ConfigError (exit 78) if the file is missing or weak."""
    path = config.status.credentials_file
    if path is None or not config.status.enabled:
        return None
    try:
        return load_credentials(path)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "status.credentials_file", None,
                                       str(exc))]) from exc


class Gate:
    """Checks a request's credentials; keeps the sessions that tokens opened."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self._sessions: dict[str, float] = {}

    def basic_ok(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return self._password_ok(user, password)

    def token_ok(self, token: str) -> bool:
        return any(hmac.compare_digest(token.encode(), p.encode()) for p in self.users.values())

    def open_session(self) -> str:
        now = time.time()
        self._sessions = {s: t for s, t in self._sessions.items() if t > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_SECONDS
        return session

    def session_ok(self, session: str | None) -> bool:
        return session is not None and self._sessions.get(session, 0.0) > time.time()

    def _password_ok(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        # Compare even for unknown users, so timing does not tell which users exist.
        ok = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        return ok and expected is not None
