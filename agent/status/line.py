"""The operators' page: where the people at the line say why a machine stopped.

GET  /line           the stops (or the PIN form)
POST /line/login     a PIN or badge number opens an operator session
POST /line/classify  a reason for a stop, or for one part of a split stop
POST /line/split     a closed stop split in two at a local time, a reason for each side
POST /line/logout

This is the one place where HTTP changes anything, and it changes nothing itself
(DESIGN.md, invariant 7): a choice is handed to the pipeline's queue like a PLC sample,
and the page waits for the pipeline's answer, after the commit. What protects it:
operator sessions of their own (a cookie for /line alone; a technician's session does not
open it, and an operator's does not open the technicians' pages); a one-time token in
every form, so a replayed post is refused; SameSite=Strict cookies and a same-origin
check; only the assets the person may classify, and only their own stops (the pipeline
checks the stop belongs to the asset); a rate limit per person; and a line in the
audit log for every change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from datetime import time as clock_time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from buffer import downtimes

from ..audit import audit
from ..derive.classify import KnownDowntime
from ..httpserve import HttpError, Request, Response
from ..shared import Classification, ClassificationRefused
from ..shift.view import shift_before, shift_of
from .linepage import AssetView, PartView, StopView, page, pin_form
from .login import NO_STORE, cookie, posted_form
from .operators import SESSION_SECONDS, LineGate, LineSession

if TYPE_CHECKING:
    from buffer import Outbox

    from ..derive import AssetSpec

log = logging.getLogger("floorlink.line")

LINE_COOKIE = "floorlink_line"
LINE_PATH = "/line"
MAX_FORM = 2048  # a token, an asset, a stop id, two codes and a time
ANSWER_SECONDS = 10.0  # how long the page waits for the pipeline's commit
HTML = "text/html; charset=utf-8"

Submit = Callable[[Classification], Awaitable[None]]  # the pipeline queue's put
ENQUEUE_SECONDS = 5.0  # the queue is full only while the writer is far behind the drivers


class LineDesk:
    def __init__(self, gate: LineGate, outbox: Outbox, specs: list[AssetSpec],
                 submit: Submit, on_lock: Callable[[float], None] | None = None) -> None:
        self.gate, self.outbox, self.submit = gate, outbox, submit
        self.specs = {spec.id: spec for spec in specs}
        self.on_lock = on_lock

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Any]]:
        return {("GET", LINE_PATH): self.show, ("POST", "/line/login"): self.log_in,
                ("POST", "/line/classify"): self.classify, ("POST", "/line/split"): self.split,
                ("POST", "/line/logout"): self.log_out}

    # ------------------------------------------------------------ pages

    async def show(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _html(pin_form(), 401)
        now = time.time()
        views = [await self._asset_view(spec, now) for spec in self.specs.values()
                 if session.operator.may_classify(spec.id)]
        flash, session.flash = session.flash, None
        return _html(page(session.operator.person, views, session.issue_token(), now, flash))

    async def _asset_view(self, spec: AssetSpec, now: float) -> AssetView:
        since = shift_before(spec, shift_of(spec, now)).start
        stops = tuple(_stop_view(row) for row in
                      await downtimes.recent(self.outbox, spec.id, since))
        reasons = tuple((code, text, group)
                        for code, (text, group) in spec.operator_reasons.items())
        return AssetView(spec.id, spec.timezone, reasons, stops)

    # ------------------------------------------------------------ logins

    async def log_in(self, request: Request) -> Response:
        form = _form(request)
        client = request.remote
        locked = self.gate.lock_left()
        wait = max(locked, self.gate.throttle.wait_left(client))
        if wait > 0:
            response = _html(pin_form(f"Too many wrong PINs: try again in "
                                      f"{_wait_text(wait)}."), 429)
            response.headers.append(("Retry-After", str(max(1, round(wait)))))
            return response
        operator = self.gate.log_in(form.get("pin", "").strip())
        if operator is None:
            was_locked = self.gate.lock_left() > 0
            self.gate.failed(client)
            if self.gate.lock_left() > 0 and not was_locked and self.on_lock:
                self.on_lock(time.time() + self.gate.lock_left())
            return _html(pin_form("That PIN is not known. Try again."), 401)
        self.gate.succeeded(client)
        log.info("line page: %s logged in from %s", operator.person, client)
        return _redirect(cookie(LINE_COOKIE, self.gate.open_session(operator),
                                SESSION_SECONDS, LINE_PATH))

    async def log_out(self, request: Request) -> Response:
        session, _ = self._posted(request)
        self.gate.close_session(request.cookie(LINE_COOKIE))
        log.info("line page: %s logged out", session.operator.person)
        return _redirect(cookie(LINE_COOKIE, "", 0, LINE_PATH))

    # ------------------------------------------------------------ changes

    async def classify(self, request: Request) -> Response:
        session, form = self._posted(request)
        spec, downtime_id = self._target(session, form)
        choice = Classification(spec.id, downtime_id, session.operator.person,
                                _number(form, "code"), part=_number(form, "part", 1))
        return await self._hand_over(request, session, choice, "classify")

    async def split(self, request: Request) -> Response:
        session, form = self._posted(request)
        spec, downtime_id = self._target(session, form)
        row = await downtimes.downtime(self.outbox, spec.id, downtime_id)
        if row is None or row.end is None:
            return self._told(session, "error", "This stop can be split once it has ended.")
        at = _local_time_within(form.get("at", ""), row.start, row.end, spec.timezone)
        if at is None:
            zone = ZoneInfo(spec.timezone)
            return self._told(session, "error", "Choose a time between "
                              f"{_hhmm(row.start, zone)} and {_hhmm(row.end, zone)}.")
        choice = Classification(spec.id, downtime_id, session.operator.person,
                                _number(form, "code"), split_at=at,
                                second_code=_number(form, "second_code"))
        return await self._hand_over(request, session, choice, "split")

    async def _hand_over(self, request: Request, session: LineSession,
                         choice: Classification, action: str) -> Response:
        """Into the pipeline's queue; then wait for its commit (or its refusal)."""
        outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        choice = replace(choice, outcome=outcome)
        # Audited when committed, even if that comes after the page stopped waiting.
        outcome.add_done_callback(self._audit_when_saved(choice, request.remote, action))
        try:
            # Waits its turn like a driver's read does: a moment, not for ever.
            async with asyncio.timeout(ENQUEUE_SECONDS):
                await self.submit(choice)
        except TimeoutError:
            return self._told(session, "error", "The agent is busy: press the reason again "
                                                "in a moment.")
        try:
            async with asyncio.timeout(ANSWER_SECONDS):
                ids = await asyncio.shield(outcome)
        except ClassificationRefused as refused:
            return self._told(session, "error", str(refused))
        except TimeoutError:
            log.warning("line page: %s's %s of stop %s waits for the buffer", choice.person,
                        action, choice.downtime_id)
            return self._told(session, "error", "Not saved yet: the agent cannot write to "
                              "its disk at the moment. Your choice is waiting; check this stop "
                              "again in a few minutes.")
        log.info("line page: %s gave stop %s of %s the reason(s) %s (events %s)",
                 choice.person, choice.downtime_id, choice.asset,
                 _codes(choice), ids)
        spec = self.specs[choice.asset]
        said = spec.operator_reasons[choice.code][0]
        if choice.second_code is not None:
            said += f", then {spec.operator_reasons[choice.second_code][0]}"
        return self._told(session, "ok", f"Saved: {said}.", f"#stop-{choice.downtime_id}")

    def _audit_when_saved(self, choice: Classification, client: str, action: str
                          ) -> Callable[[asyncio.Future[str]], None]:
        def saved(outcome: asyncio.Future[str]) -> None:
            if outcome.cancelled() or outcome.exception() is not None:
                return  # refused: nothing changed
            events = outcome.result().split()
            audit(self.outbox, choice.person, f"line page from {client}", action,
                  len(events), asset=choice.asset, downtime=choice.downtime_id,
                  code=choice.code, part=choice.part, split_at=choice.split_at,
                  second_code=choice.second_code, ids=events)
        return saved

    # ------------------------------------------------------------ checks

    def _session(self, request: Request) -> LineSession | None:
        return self.gate.session(request.cookie(LINE_COOKIE))

    def _posted(self, request: Request) -> tuple[LineSession, dict[str, str]]:
        """The session and form of a change: logged in, from this page, a fresh token."""
        session = self._session(request)
        if session is None:
            raise HttpError(401, "log in with your PIN at /line first\n", headers=NO_STORE)
        form = _form(request)
        if not session.use_token(form.get("csrf", "")):
            raise HttpError(403, "this form was already sent, or is too old: open /line "
                                 "again and choose once more\n", headers=NO_STORE)
        if not session.may_post(time.monotonic()):
            raise HttpError(429, "too many changes in a minute: wait a moment\n",
                            headers=[*NO_STORE, ("Retry-After", "60")])
        return session, form

    def _target(self, session: LineSession, form: dict[str, str]) -> tuple[AssetSpec, str]:
        asset = form.get("asset", "")
        spec = self.specs.get(asset)
        if spec is None or not session.operator.may_classify(asset):
            log.warning("line page: %s tried to classify a stop of asset %r, which is not "
                        "theirs", session.operator.person, asset[:80])
            raise HttpError(403, "you may not classify stops of that asset\n",
                            headers=NO_STORE)
        downtime_id = form.get("downtime", "")
        if not downtime_id or len(downtime_id) > 64:
            raise HttpError(400, "which stop? the form names none\n", headers=NO_STORE)
        return spec, downtime_id

    def _told(self, session: LineSession, tone: str, text: str, anchor: str = "") -> Response:
        session.flash = (tone, text)
        return _redirect(None, anchor)


def _codes(choice: Classification) -> str:
    return (f"{choice.code}" if choice.second_code is None
            else f"{choice.code} and {choice.second_code}, split at {choice.split_at}")


def _stop_view(row: downtimes.DowntimeRow) -> StopView:
    stop = KnownDowntime.stored(row.id, row.asset, row.start, row.end, row.work_order,
                                row.detail)
    views = tuple(PartView(number, part.start, part.end, part.reason, part.by)
                  for number, part in enumerate(stop.parts, 1))
    whole = views[0] if len(views) == 1 else None
    return StopView(stop.id, stop.started_at, stop.ended_at,
                    whole.reason if whole else str(row.reason or "unclassified"),
                    whole.by if whole else None,
                    unclassified=not views and not stop.plc_code,
                    parts=views if len(views) == 2 else ())


def _form(request: Request) -> dict[str, str]:
    return posted_form(request, MAX_FORM, LINE_PATH)


def _number(form: dict[str, str], name: str, default: int | None = None) -> int:
    text = form.get(name, "")
    if not text and default is not None:
        return default
    if not text.isdigit() or len(text) > 10:
        raise HttpError(400, f"the form's {name} is not a number; open /line again\n",
                        headers=NO_STORE)
    return int(text)


def _local_time_within(text: str, start: float, end: float, zone_name: str) -> float | None:
    """'HH:MM' (or 'HH:MM:SS') on the asset's clock, on the day that puts it inside the
    stop (a stop may cross midnight); None if no day does."""
    try:
        wall = clock_time.fromisoformat(text)
    except ValueError:
        return None
    zone = ZoneInfo(zone_name)
    first = datetime.fromtimestamp(start, zone).date()
    for offset in range(0, 3):
        at = datetime.combine(first + timedelta(days=offset), wall, zone).timestamp()
        if start < at < end:
            return at
    return None


def _hhmm(at: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%H:%M:%S")


def _wait_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _html(text: str, status: int = 200) -> Response:
    return Response.text(text, status, content_type=HTML, headers=list(NO_STORE))


def _redirect(set_cookie: str | None, anchor: str = "") -> Response:
    headers = [*NO_STORE, ("Location", LINE_PATH + anchor)]
    if set_cookie:
        headers.append(("Set-Cookie", set_cookie))
    return Response.text("see /line\n", 303, headers=headers)
