"""Odoo's two external APIs behind one call: `call(model, method, ids, **named)`.

* JSON-RPC (Odoo 17, 18): `POST /jsonrpc`, `common.login` for the uid, then
  `object.execute_kw(db, uid, key, model, method, args, kwargs)`. Always HTTP 200;
  a fault is `error.data.name`. A method returning None leaves out `result`.
* JSON-2 (Odoo 19+): `POST /json/2/<model>/<method>`, bearer key, `X-Odoo-Database`,
  named arguments only; faults are HTTP 4xx/5xx with `{name, message, ...}`.

Both take named arguments here, so one mapping serves both. XML-RPC is never used:
methods that return None commit and then fault there.

Every failure is sorted into what the uplink must do about it:
`OdooTransient` (retry), `OdooCredentials` (pause the uplink, raise an alarm) or
`OdooRefused` (dead-letter the event, naming what to fix in Odoo).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ... import __version__
from ...settings.base import TlsSettings
from ...settings.odoo import OdooUplink
from ..https import retry_after
from ..tls import client_context, explain, ssl_cause

EXCERPT = 300
MESSAGE_LIMIT = 2000  # of an Odoo fault's message kept in a dead letter
TRANSIENT_STATUS = frozenset({408, 409, 429, 502, 503, 504})
# Exceptions Odoo raises when two transactions collide: the same call again succeeds.
CONCURRENCY_FAULTS = ("SerializationFailure", "TransactionRollbackError", "ConcurrencyError",
                      "LockNotAvailable", "DeadlockDetected")
COOLDOWN = "Too many login failures"


class OdooError(Exception):
    def __init__(self, message: str, answer: str | None = None) -> None:
        super().__init__(message)
        self.answer = answer


class OdooTransient(OdooError):
    """Try the same again later: network, timeouts, busy or restarting server."""

    def __init__(self, message: str, answer: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, answer)
        self.retry_after = retry_after


class OdooCredentials(OdooError):
    """Odoo refuses who we are: nothing can go through until someone fixes it."""


class OdooRefused(OdooError):
    """Odoo refuses this call for a reason that does not pass by itself."""


@dataclass(frozen=True)
class Fault:
    """An Odoo exception as it came over the wire."""

    name: str
    message: str
    status: int = 200

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def raise_sorted(self, where: str) -> None:
        answer = f"{self.name}: {self.message}"[:EXCERPT]
        # The whole message: Odoo often names the record on its second line ("You need to
        # supply a Lot/Serial Number for product:\n- [B-200] Bracket B-200").
        text = self.message.strip()[:MESSAGE_LIMIT] or self.name
        if self.short_name == "AccessDenied" or self.name == "werkzeug.exceptions.Unauthorized":
            if COOLDOWN in self.message:
                # Odoo's login cool-down: wait it out, do not count as bad credentials.
                raise OdooTransient(f"{where}: Odoo's login cool-down is on ({text})", answer)
            raise OdooCredentials(f"{where}: Odoo refused the API key ({text})", answer)
        if any(name in self.name for name in CONCURRENCY_FAULTS) or \
                "could not serialize access" in self.message:
            raise OdooTransient(f"{where}: concurrent update in Odoo ({text})", answer)
        if self.name.startswith("psycopg2") and "does not exist" in self.message:
            raise OdooCredentials(f"{where}: {text.strip()}; check `database`", answer)
        if self.name.startswith("psycopg2.OperationalError") or self.name.startswith(
                "psycopg2.errors.OperationalError"):
            raise OdooTransient(f"{where}: Odoo cannot reach its database ({text})", answer)
        raise OdooRefused(f"{where}: {self.short_name}: {text}", answer)


class OdooClient:
    """One API user talking to one database; `call` is safe to repeat after a failure."""

    protocol: Literal["jsonrpc", "json2"]

    def __init__(self, settings: OdooUplink, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.uid: int | None = None
        self.server_version: str | None = None
        self._ids = itertools.count(1)

    @property
    def base(self) -> str:
        return self.settings.url.rstrip("/")

    async def login(self) -> None:
        raise NotImplementedError

    async def call(self, model: str, method: str, ids: list[int] | None = None, *,
                   context: dict[str, Any] | None = None, **named: Any) -> Any:
        raise NotImplementedError

    async def _post(self, path: str, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> httpx.Response:
        where = f"{self.base}{path}"
        try:
            response = await self.http.post(where, content=json.dumps(body).encode(),
                                            headers={"Content-Type": "application/json",
                                                     **(headers or {})})
        except httpx.TransportError as exc:
            tls_error = ssl_cause(exc)
            if tls_error is not None:
                raise OdooTransient(f"{self.base}: " + explain(
                    tls_error, httpx.URL(self.base).host, self.settings.tls or TlsSettings())
                ) from exc
            raise OdooTransient(f"Odoo at {self.base} not reachable: "
                                f"{type(exc).__name__} {exc}".rstrip()) from exc
        if response.status_code in TRANSIENT_STATUS or (
                response.status_code >= 500 and _fault_of(response) is None):
            raise OdooTransient(f"{where} answered HTTP {response.status_code}",
                                f"HTTP {response.status_code}: {response.text[:EXCERPT]}",
                                retry_after(response.headers.get("Retry-After")))
        return response


class JsonRpcClient(OdooClient):
    protocol = "jsonrpc"

    async def version(self) -> dict[str, Any]:
        return dict(await self._rpc("common", "version", []))

    async def login(self) -> None:
        s = self.settings
        uid = await self._rpc("common", "login",
                              [s.database, s.username, s.api_key.get_secret_value()])
        if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
            # login answers `false`, not a fault, for a wrong or expired key.
            raise OdooCredentials(
                f"Odoo at {self.base} refused user '{s.username}' with this API key in "
                f"database '{s.database}': the key is wrong, expired or revoked, or the user "
                "is archived; create a new API key for the user and set api_key",
                "common.login returned false")
        self.uid = uid

    async def call(self, model: str, method: str, ids: list[int] | None = None, *,
                   context: dict[str, Any] | None = None, **named: Any) -> Any:
        if self.uid is None:
            await self.login()
        s = self.settings
        kwargs = dict(named)
        if context is not None:
            kwargs["context"] = context
        args = [ids] if ids is not None else []
        return await self._rpc("object", "execute_kw", [
            s.database, self.uid, s.api_key.get_secret_value(), model, method, args, kwargs],
            f"{model}.{method}")

    async def _rpc(self, service: str, method: str, args: list[Any],
                   what: str | None = None) -> Any:
        body = {"jsonrpc": "2.0", "method": "call", "id": next(self._ids),
                "params": {"service": service, "method": method, "args": args}}
        response = await self._post("/jsonrpc", body)
        where = f"Odoo {what or service + '.' + method}"
        if response.status_code == 404:
            raise OdooCredentials(f"no JSON-RPC endpoint at {self.base}/jsonrpc (HTTP 404); "
                                  "check url, or set protocol: json2 for Odoo 19 and later")
        if response.status_code != 200:
            # Odoo answers JSON-RPC with 200 even for faults: this comes from something in
            # front of it (a proxy's authentication, a firewall). Nothing gets through it.
            raise OdooCredentials(
                f"{self.base}/jsonrpc answered HTTP {response.status_code}, which Odoo itself "
                "never does; check the proxy or firewall in front of Odoo",
                f"HTTP {response.status_code}: {response.text[:EXCERPT]}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise OdooTransient(f"{where}: not a JSON answer: {response.text[:80]!r}") from exc
        error = answer.get("error")
        if error is not None:
            data = error.get("data") or {}
            Fault(str(data.get("name") or "odoo.error"),
                  str(data.get("message") or error.get("message") or "")).raise_sorted(where)
        # A method that returns None gives no `result` key at all.
        return answer.get("result")


class Json2Client(OdooClient):
    protocol = "json2"

    async def login(self) -> None:
        context = await self.call("res.users", "context_get")
        uid = context.get("uid") if isinstance(context, dict) else None
        if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
            # An answer without a user is no login, whatever its HTTP status says.
            raise OdooCredentials(
                f"Odoo at {self.base} answered the login for database "
                f"'{self.settings.database}' without a user id ({str(context)[:80]}); the key "
                "was not accepted: check url, database and api_key",
                f"res.users.context_get returned {str(context)[:EXCERPT]}")
        self.uid = uid

    async def call(self, model: str, method: str, ids: list[int] | None = None, *,
                   context: dict[str, Any] | None = None, **named: Any) -> Any:
        s = self.settings
        body = dict(named)
        if ids is not None:
            body["ids"] = ids
        if context is not None:
            body["context"] = context
        headers = {"Authorization": f"bearer {s.api_key.get_secret_value()}",
                   "X-Odoo-Database": s.database}
        response = await self._post(f"/json/2/{model}/{method}", body, headers)
        where = f"Odoo {model}.{method}"
        if response.status_code == 200:
            try:
                return response.json() if response.content else None
            except ValueError as exc:
                raise OdooCredentials(
                    f"{where} answered HTTP 200 with something that is not JSON "
                    f"({response.text[:80]!r}); this is not Odoo's JSON-2 API: check url and "
                    "the proxy in front of Odoo", f"HTTP 200: {response.text[:EXCERPT]}") from exc
        fault = _fault_of(response)
        if fault is None:
            raise OdooCredentials(
                f"{where} answered HTTP {response.status_code} without Odoo's error body; "
                "check url and the proxy or firewall in front of Odoo",
                f"HTTP {response.status_code}: {response.text[:EXCERPT]}")
        if response.status_code == 401:
            raise OdooCredentials(
                f"Odoo at {self.base} refused the API key for database '{s.database}' "
                f"({fault.message}): it is wrong, expired or revoked; create a new API key "
                "for the user and set api_key", f"HTTP 401: {fault.message}")
        if response.status_code == 404 and fault.name == "werkzeug.exceptions.NotFound":
            raise OdooRefused(f"{where}: Odoo has no such model or method here ({fault.message}); "
                              "is the Odoo app that provides it installed?",
                              f"HTTP 404: {fault.message}")
        fault.raise_sorted(where)


def _fault_of(response: httpx.Response) -> Fault | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or "name" not in body:
        return None
    return Fault(str(body["name"]), str(body.get("message") or ""), response.status_code)


def http_client(settings: OdooUplink) -> httpx.AsyncClient:
    verify: Any = client_context(settings.tls) if settings.tls is not None else True
    return httpx.AsyncClient(
        verify=verify, follow_redirects=False,
        headers={"User-Agent": f"floorlink/{__version__}"},
        timeout=httpx.Timeout(settings.timeouts.read, connect=settings.timeouts.connect))


async def connect(settings: OdooUplink, http: httpx.AsyncClient) -> OdooClient:
    """The client for the configured protocol, or for the one the server speaks."""
    client: OdooClient
    if settings.protocol == "json2":
        client = Json2Client(settings, http)
    elif settings.protocol == "jsonrpc":
        client = JsonRpcClient(settings, http)
    else:
        probe = JsonRpcClient(settings, http)
        try:
            version = await probe.version()
        except OdooCredentials:  # no /jsonrpc at all: a newer Odoo
            client = Json2Client(settings, http)
        else:
            info = version.get("server_version_info") or [0]
            major = int(info[0]) if str(info[0]).isdigit() else 0
            client = Json2Client(settings, http) if major >= 19 else probe
            client.server_version = str(version.get("server_version"))
    await client.login()
    return client
