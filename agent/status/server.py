"""The status endpoint: reads the board, never changes the agent. One exception, the
operators' line page (line.py), hands a person's reason for a stop to the pipeline's
queue; even it writes nothing itself.

GET /         the technician's page (HTML, refreshes itself)
GET /status   the same as JSON
GET /metrics  Prometheus text format
GET /healthz  200 while the core tasks run (liveness)
GET /readyz   200 once the config is loaded, the buffer open, the uplinks started
GET|POST /login  the login form, when logins are configured (see auth.py, login.py)
GET /line, POST /line/...  the operators' page, with logins of its own (line.py)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..httpserve import Handler, HttpError, HttpServer, Limits, Request, Response
from ..redact import scrub, scrub_values
from .auth import SESSION_COOKIE, Gate
from .board import StatusBoard
from .clock import ClockWatch
from .line import LINE_PATH, LineDesk
from .login import NO_STORE, log_in, login_form
from .metrics import AgentMetrics
from .page import render

log = logging.getLogger("floorlink.status")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no plant data


# Sent with every answer. The pages carry no script of their own: a PLC string that got
# past escaping still could not run. `frame-ancestors` and X-Frame-Options keep the page
# out of another site's frame; no Referer leaks the agent's address to another site.
# (`same-origin`, not `no-referrer`: under no-referrer a browser posts the login and line
# forms with `Origin: null`, and the same-origin check must then refuse them.)
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
     "img-src 'self' data:; script-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class StatusServer:
    def __init__(self, board: StatusBoard, bind: str, port: int,
                 metrics: AgentMetrics | None = None,
                 users: dict[str, str] | None = None, limits: Limits | None = None,
                 line: LineDesk | None = None) -> None:
        self.board = board
        self.bind, self.port = bind, port
        self.metrics = metrics or AgentMetrics(board)
        self.gate = Gate(users) if users else None
        self.clock = ClockWatch()
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._page, ("GET", "/status"): self._status,
            ("GET", "/metrics"): self._metrics, ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz}
        if self.gate is not None:
            routes[("GET", "/login")] = self._login_form
            routes[("POST", "/login")] = self._log_in
        self.line = line
        if line is not None:
            routes.update(line.routes())
        self._http = HttpServer(routes, middleware=self._guard, limits=limits,
                                headers=SECURITY_HEADERS, name="status page")

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

    async def _guard(self, request: Request, handler: Handler) -> Response:
        if self.gate is None:
            self._loopback_host_only(request)
            return await handler(request)
        if request.path == LINE_PATH or request.path.startswith(LINE_PATH + "/"):
            return await handler(request)  # operators' logins, checked by the line page
        return await self._authenticate(request, self.gate, handler)

    def _loopback_host_only(self, request: Request) -> None:
        """Without logins the page is for this machine only. A browser that reaches it by a
        name of another site (DNS rebinding, from a page the technician opened through an
        SSH tunnel) would read plant data on that site's behalf: its Host gives it away."""
        host = request.headers.get("host")
        if host is None:
            return  # HTTP/1.0 without Host: not a browser
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() in LOOPBACK_NAMES or name.startswith("127."):
            return
        raise HttpError(421, f"this status page answers to loopback names only (localhost, "
                             f"127.0.0.1, [::1]), not {host[:100]!r}. Open "
                             f"http://localhost:{self.port}/, or set status.credentials_file "
                             "to serve it on the network with logins\n")

    async def _authenticate(self, request: Request, gate: Gate, handler: Handler) -> Response:
        if request.path in OPEN_PATHS or request.path == "/login":
            return await handler(request)
        if "token" in request.query:
            raise HttpError(400, "a password never travels in a URL: it would stay in the "
                                 "browser's history. Log in with the form at /login\n",
                            headers=NO_STORE)
        if gate.session_ok(request.cookie(SESSION_COOKIE)):
            return await handler(request)
        header = request.headers.get("authorization")
        if header:
            wait = gate.throttle.wait_left(request.remote)
            if wait > 0:
                raise HttpError(429, f"too many wrong logins from {request.remote}: try again "
                                     f"in {wait:.0f} s\n",
                                headers=[*NO_STORE, ("Retry-After", str(max(1, round(wait))))])
            if gate.basic_ok(header):
                gate.throttle.succeeded(request.remote)
                return await handler(request)
            gate.throttle.failed(request.remote)
        if request.path == "/" and not header:
            return login_form()  # a browser: the form, not the basic-auth dialog
        raise HttpError(401, "log in: HTTP basic auth (curl -u, Prometheus basic_auth), or "
                             "the form at /login\n",
                        headers=[*NO_STORE, ("WWW-Authenticate",
                                             'Basic realm="floorlink", charset="UTF-8"')])

    async def _login_form(self, request: Request) -> Response:
        return login_form(status=200)

    async def _log_in(self, request: Request) -> Response:
        assert self.gate is not None
        return await log_in(request, self.gate)

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
    # Scrubbed before encoding (JSON escapes would hide a secret with a quote in it),
    # and after, for what `default=str` turned into text.
    return scrub(json.dumps(scrub_values(value), indent=2, default=str))
