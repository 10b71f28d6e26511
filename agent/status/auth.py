"""Who may read the status page when it is reachable beyond this machine.

The credentials file holds `user:password` lines (blank lines and `#` comments
allowed), readable by the service alone: with systemd, a LoadCredential= file.
A browser logs in with the form (POST /login), which opens a session cookie;
Prometheus and curl send HTTP basic auth. A password never travels in a URL:
it would stay in the browser's history and in any proxy's log.

Wrong logins cost time: after a few, each client waits longer before it may try
again (`LoginThrottle`), and the log says how many were refused, not each one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import ConfigError, ConfigIssue
from ..logs import Summary
from ..settings.secrets import warn_if_others_can_read

if TYPE_CHECKING:
    from ..settings.models import Config

log = logging.getLogger("floorlink.status")

SESSION_COOKIE = "floorlink_session"
SESSION_SECONDS = 12 * 3600  # one shift and a half
MAX_SESSIONS = 1000  # a shift's phones and browsers, many times over
T = TypeVar("T")


def load_credentials(path: Path) -> dict[str, str]:
    """user -> password; ValueError saying what to fix."""
    warn_if_others_can_read(path, "the status users file")
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


def room_for_a_session(sessions: dict[str, T], expiry: Callable[[T], float], cap: int
                       ) -> tuple[dict[str, T], str]:
    """The sessions still live, with room for one more (when `cap` are, the one that expires
    first makes room), and a new session key."""
    now = time.time()
    live = {key: held for key, held in sessions.items() if expiry(held) > now}
    while len(live) >= cap:
        del live[min(live, key=lambda key: expiry(live[key]))]
    return live, secrets.token_urlsafe(32)


class Gate:
    """Checks a request's credentials; keeps the sessions that tokens opened."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.throttle = LoginThrottle()
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

    def password_ok(self, user: str, password: str) -> bool:
        return self._password_ok(user, password)

    def open_session(self) -> str:
        self._sessions, session = room_for_a_session(self._sessions, float, MAX_SESSIONS)
        self._sessions[session] = time.time() + SESSION_SECONDS
        return session

    def session_ok(self, session: str | None) -> bool:
        return session is not None and self._sessions.get(session, 0.0) > time.time()

    def _password_ok(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        # Compare even for unknown users, so timing does not tell which users exist.
        ok = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        return ok and expected is not None


@dataclass
class _Strikes:
    failures: int = 0
    wait_until: float = 0.0


class LoginThrottle:
    """Per client: `free` wrong logins, then a wait that doubles with each further one, up
    to `longest` seconds. A right login ends the waits. While a client waits, every
    attempt is refused without a look at the password, so guessing runs at one try per
    wait however fast the client sends."""

    MAX_CLIENTS = 4096  # addresses remembered; the longest-unseen is forgotten first

    def __init__(self, free: int = 5, first_wait: float = 1.0, longest: float = 60.0) -> None:
        self.free, self.first_wait, self.longest = free, first_wait, longest
        self._clients: OrderedDict[str, _Strikes] = OrderedDict()
        self._refusals = Summary(log, "status page: refused %d login(s) from %s")

    def wait_left(self, client: str) -> float:
        """Seconds until `client` may try again; 0 if it may now."""
        strikes = self._clients.get(client)
        if strikes is None:
            return 0.0
        left = strikes.wait_until - time.monotonic()
        if left > 0:
            self._refusals.count(f"{client} (waiting out its wrong logins)")
        return max(left, 0.0)

    def failed(self, client: str) -> None:
        strikes = self._clients.pop(client, None) or _Strikes()
        self._clients[client] = strikes  # most recently seen last
        while len(self._clients) > self.MAX_CLIENTS:
            self._clients.popitem(last=False)
        strikes.failures += 1
        beyond = strikes.failures - self.free
        if beyond >= 0:
            wait = min(self.first_wait * 2 ** min(beyond, 32), self.longest)
            strikes.wait_until = time.monotonic() + wait
        self._refusals.count(f"{client} (wrong user or password)")

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
