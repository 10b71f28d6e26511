"""The status endpoint: reads the board, never changes the agent.

GET /         the technician's page (HTML, refreshes itself)
GET /status   the same as JSON
GET /metrics  Prometheus text format
GET /healthz  200 while the core tasks run (liveness)
GET /readyz   200 once the config is loaded, the buffer open, the uplinks started
"""

from __future__ import annotations

import json
import logging
from http.cookies import SimpleCookie
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..httpserve import Handler, HttpError, HttpServer, Request, Response
from ..redact import scrub
from .auth import SESSION_COOKIE, SESSION_SECONDS, Gate
from .board import StatusBoard
from .clock import ClockWatch
from .metrics import AgentMetrics
from .page import render

log = logging.getLogger("floorlink.status")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no plant data


class StatusServer:
    def __init__(self, board: StatusBoard, bind: str, port: int,
                 metrics: AgentMetrics | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.board = board
        self.bind, self.port = bind, port
        self.metrics = metrics or AgentMetrics(board)
        self.gate = Gate(users) if users else None
        self.clock = ClockWatch()
        self._http = HttpServer({("GET", "/"): self._page, ("GET", "/status"): self._status,
                                 ("GET", "/metrics"): self._metrics,
                                 ("GET", "/healthz"): self._healthz,
                                 ("GET", "/readyz"): self._readyz},
                                middleware=self._authenticate if self.gate else None)

    async def start(self) -> None:
        await self._http.start_tcp(self.bind, self.port)  # OSError if taken: must not start
        if self.gate:
            log.warning("status page listening on %s:%d, beyond this machine; logins required "
                        "(%d user%s)", self.bind, self.port, len(self.gate.users),
                        "s" if len(self.gate.users) != 1 else "")
        await self.clock.refresh()
        self.board.clock = self.clock.status

    async def close(self) -> None:
        await self._http.close()

    async def _authenticate(self, request: Request, handler: Handler) -> Response:
        gate = self.gate
        assert gate is not None
        if request.path in OPEN_PATHS:
            return await handler(request)
        token = request.query.get("token")
        if token is not None:
            if not gate.token_ok(token):
                log.warning("status page: refused a token from %s", request.remote)
                raise HttpError(401, "wrong token\n")
            # Drop the token from the address bar and history: the cookie carries on.
            cookie: SimpleCookie = SimpleCookie()
            cookie[SESSION_COOKIE] = gate.open_session()
            morsel = cookie[SESSION_COOKIE]
            morsel["max-age"] = str(SESSION_SECONDS)
            morsel["httponly"] = True
            morsel["samesite"] = "Strict"
            morsel["path"] = "/"
            return Response.text("logged in\n", 303, headers=[
                ("Location", request.path), ("Set-Cookie", morsel.OutputString())])
        if (gate.session_ok(request.cookie(SESSION_COOKIE))
                or gate.basic_ok(request.headers.get("authorization"))):
            return await handler(request)
        raise HttpError(401, "log in: basic auth, or open /?token=<password> once\n",
                        headers=[("WWW-Authenticate", 'Basic realm="floorlink", charset="UTF-8"')])

    async def _fresh_snapshot(self) -> dict[str, Any]:
        self.board.clock = await self.clock.refresh()
        return self.board.snapshot()

    async def _page(self, request: Request) -> Response:
        return Response.text(scrub(render(await self._fresh_snapshot())),
                             content_type="text/html; charset=utf-8",
                             headers=[("Cache-Control", "no-store")])

    async def _status(self, request: Request) -> Response:
        return Response.json(await self._fresh_snapshot(), dumps=_dumps)

    async def _metrics(self, request: Request) -> Response:
        self.board.clock = await self.clock.refresh()
        return Response(body=scrub(generate_latest(self.metrics.registry).decode()).encode(),
                        content_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        if self.board.alive:
            return Response.text("ok\n")
        return Response.text("not running\n", 503)

    async def _readyz(self, request: Request) -> Response:
        readiness = self.board.readiness()
        body = "".join(f"{check} {'ok' if ok else 'NO'}\n" for check, ok in readiness.items())
        return Response.text(body, 200 if all(readiness.values()) else 503)


def _dumps(value: Any) -> str:
    return scrub(json.dumps(value, indent=2, default=str))
