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
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..redact import scrub
from .auth import SESSION_COOKIE, SESSION_SECONDS, Gate
from .board import StatusBoard
from .clock import ClockWatch
from .metrics import AgentMetrics
from .page import render

log = logging.getLogger("floorlink.status")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        middlewares = [self._authenticate] if self.gate else []
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/", self._page)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()  # raises OSError if the port is taken: the agent must not start
        if self.gate:
            log.warning("status page listening on %s:%d, beyond this machine; logins required "
                        "(%d user%s)", self.bind, self.port, len(self.gate.users),
                        "s" if len(self.gate.users) != 1 else "")
        await self.clock.refresh()
        self.board.clock = self.clock.status

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        gate = self.gate
        assert gate is not None
        if request.path in OPEN_PATHS:
            return await handler(request)
        token = request.query.get("token")
        if token is not None:
            if not gate.token_ok(token):
                log.warning("status page: refused a token from %s", request.remote)
                raise web.HTTPUnauthorized(text="wrong token\n")
            # Drop the token from the address bar and history: the cookie carries on.
            response = web.HTTPSeeOther(request.rel_url.with_query(None))
            response.set_cookie(SESSION_COOKIE, gate.open_session(), max_age=SESSION_SECONDS,
                                httponly=True, samesite="Strict", path="/")
            raise response
        if (gate.session_ok(request.cookies.get(SESSION_COOKIE))
                or gate.basic_ok(request.headers.get("Authorization"))):
            return await handler(request)
        raise web.HTTPUnauthorized(
            text="log in: basic auth, or open /?token=<password> once\n",
            headers={"WWW-Authenticate": 'Basic realm="floorlink", charset="UTF-8"'})

    async def _fresh_snapshot(self) -> dict[str, Any]:
        self.board.clock = await self.clock.refresh()
        return self.board.snapshot()

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=scrub(render(await self._fresh_snapshot())),
                            content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self._fresh_snapshot(), dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        self.board.clock = await self.clock.refresh()
        return web.Response(body=scrub(generate_latest(self.metrics.registry).decode()).encode(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.board.alive:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not running\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        readiness = self.board.readiness()
        body = "".join(f"{check} {'ok' if ok else 'NO'}\n" for check, ok in readiness.items())
        return web.Response(status=200 if all(readiness.values()) else 503, text=body)


def _dumps(value: Any) -> str:
    return scrub(json.dumps(value, indent=2, default=str))
