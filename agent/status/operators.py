"""Who may classify stops at the line page, and how they log in.

Operators are not technicians. Each has a short PIN or a badge number, and a list of the
assets they may classify, in a file of `person:PIN:assets` lines (assets comma-separated,
or `*` for all), readable by the service alone:

    # person : PIN or badge : assets
    ana:4711:press-1,press-2
    badge-00172:00172:*

A PIN is short, so it is guessable: that is why this role can do nothing but classify
stops, why a session ends with the shift, and why wrong PINs lock the door. Each client
may try a few, then waits (doubling, up to 15 min); and across all clients, after
LOCK_AFTER wrong PINs within LOCK_WINDOW seconds, PIN logins stop for LOCK_SECONDS, with
an alarm on the technicians' page, because a guesser on the plant network may use many
addresses. Each lock-out that follows another without a right PIN between them lasts
twice as long, up to LONGEST_LOCK: a guesser gets about 200 tries a day, not thousands.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ConfigIssue
from ..settings.secrets import warn_if_others_can_read
from .auth import LoginThrottle, room_for_a_session

if TYPE_CHECKING:
    from ..settings.models import Config

log = logging.getLogger("floorlink.status")

MIN_PIN = 4
MAX_LINES = 2000  # a plant's workforce, several times over
PERSON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
PIN = re.compile(rf"^[A-Za-z0-9]{{{MIN_PIN},64}}$")
SESSION_SECONDS = 9 * 3600  # a shift and its handover
MAX_SESSIONS = 500  # a line's tablets and phones, many times over
PAGE_TOKENS = 20  # forms kept valid per session: a few open tabs
TOKEN_SECONDS = 3600
LOCK_AFTER = 20
LOCK_WINDOW = 600.0
LOCK_SECONDS = 600.0
LONGEST_LOCK = 4 * 3600.0
POSTS_PER_MINUTE = 30  # a person classifies a stop in seconds, not many a second


@dataclass(frozen=True)
class Operator:
    person: str
    pin: str
    assets: frozenset[str] | None  # None: every asset

    def may_classify(self, asset: str) -> bool:
        return self.assets is None or asset in self.assets


def load_operators(path: Path, known_assets: set[str]) -> list[Operator]:
    """The operators in `path`; ValueError saying which line to fix and how."""
    warn_if_others_can_read(path, "the operators file")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
                         ) from exc
    operators: list[Operator] = []
    pins: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(operators) >= MAX_LINES:
            raise ValueError(f"{path} holds more than {MAX_LINES} operators")
        where = f"{path} line {number}"
        person, pin, assets = (part.strip() for part in [*line.split(":", 2), "", ""][:3])
        if not PERSON.match(person) or not pin or not assets:
            raise ValueError(f"{where}: write `person:PIN:assets`, e.g. `ana:4711:press-1` "
                             "(assets comma-separated, or *)")
        if not PIN.match(pin):
            raise ValueError(f"{where}: the PIN or badge number of {person} must be {MIN_PIN} "
                             "to 64 letters or digits")
        if pin in pins:
            raise ValueError(f"{where}: {person} has the same PIN as line {pins[pin]}; a PIN "
                             "says who someone is, so each person needs their own")
        pins[pin] = number
        allowed: frozenset[str] | None = None
        if assets != "*":
            allowed = frozenset(a.strip() for a in assets.split(",") if a.strip())
            unknown = sorted(allowed - known_assets)
            if unknown:
                raise ValueError(f"{where}: {person} may classify {', '.join(unknown)}, which "
                                 "the config has no asset of; the assets are: "
                                 + (", ".join(sorted(known_assets)) or "none"))
        operators.append(Operator(person, pin, allowed))
    if not operators:
        raise ValueError(f"{path} holds no `person:PIN:assets` line")
    return operators


def line_operators(config: Config) -> list[Operator] | None:
    """The line page's operators; ConfigError (exit 78) if the file is missing or wrong."""
    path = config.status.operators_file
    if path is None or not config.status.enabled:
        return None
    try:
        return load_operators(path, {asset.id for asset in config.assets})
    except ValueError as exc:
        raise ConfigError([ConfigIssue(str(path), None, "status.operators_file", None,
                                       str(exc))]) from exc


@dataclass
class LineSession:
    operator: Operator
    expires: float
    tokens: OrderedDict[str, float] = field(default_factory=OrderedDict)  # token -> expiry
    posts: deque[float] = field(default_factory=deque)  # times of recent changes
    flash: tuple[str, str] | None = None  # ("ok" | "error", text) for the next page

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + TOKEN_SECONDS
        while len(self.tokens) > PAGE_TOKENS:
            self.tokens.popitem(last=False)
        return token

    def use_token(self, token: str) -> bool:
        """True once for each token this session was given: a replayed form is refused."""
        for known in self.tokens:
            if hmac.compare_digest(known.encode(), token.encode()):
                return self.tokens.pop(known) > time.time()
        return False

    def may_post(self, now: float) -> bool:
        while self.posts and now - self.posts[0] > 60.0:
            self.posts.popleft()
        if len(self.posts) >= POSTS_PER_MINUTE:
            return False
        self.posts.append(now)
        return True


class LineGate:
    """PIN logins and the operators' sessions (kept apart from the technicians')."""

    def __init__(self, operators: list[Operator]) -> None:
        self.operators = operators
        self.throttle = LoginThrottle(free=5, first_wait=30.0, longest=900.0)
        self._failures: deque[float] = deque()
        self.locked_until = 0.0
        self.lockouts = 0
        self._locks_in_row = 0  # lock-outs since the last right PIN
        self._sessions: dict[str, LineSession] = {}

    def replace_operators(self, operators: list[Operator]) -> None:
        """A reloaded file: a person taken out (or given other assets or another PIN) is
        logged out at once."""
        self.operators = operators
        kept = set(operators)
        self._sessions = {k: s for k, s in self._sessions.items() if s.operator in kept}

    def log_in(self, pin: str) -> Operator | None:
        """The operator with this PIN. Every PIN is compared, so timing tells nothing."""
        found = None
        for operator in self.operators:
            if hmac.compare_digest(operator.pin.encode(), pin.encode()):
                found = operator
        return found

    def failed(self, client: str) -> None:
        self.throttle.failed(client)
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > LOCK_WINDOW:
            self._failures.popleft()
        if len(self._failures) >= LOCK_AFTER:
            seconds = min(LOCK_SECONDS * 2 ** min(self._locks_in_row, 16), LONGEST_LOCK)
            self.locked_until = now + seconds
            self.lockouts += 1
            self._locks_in_row += 1
            self._failures.clear()
            log.error("line page: %d wrong PINs within %.0f min: PIN logins are locked for "
                      "%.0f min. Someone may be guessing PINs on the plant network; the log "
                      "names the addresses", LOCK_AFTER, LOCK_WINDOW / 60, seconds / 60)

    def succeeded(self, client: str) -> None:
        """A right PIN: the client's waits end, and the next lock-out starts short again."""
        self.throttle.succeeded(client)
        self._locks_in_row = 0

    def lock_left(self) -> float:
        return max(self.locked_until - time.monotonic(), 0.0)

    def open_session(self, operator: Operator) -> str:
        self._sessions, key = room_for_a_session(self._sessions, lambda s: s.expires,
                                                 MAX_SESSIONS)
        self._sessions[key] = LineSession(operator, time.time() + SESSION_SECONDS)
        return key

    def session(self, key: str | None) -> LineSession | None:
        found = self._sessions.get(key) if key else None
        if found is None or found.expires <= time.time():
            return None
        return found

    def close_session(self, key: str | None) -> None:
        if key:
            self._sessions.pop(key, None)
