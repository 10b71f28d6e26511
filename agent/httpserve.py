"""HTTP/1.1 serving for the status page and the control socket.

h11 (the protocol state machine under httpx, already installed with it) parses
requests and frames answers: keep-alive, chunked bodies, HTTP/1.0 peers and
malformed input are its job. This module routes each request to a handler and
writes what the handler returns. The servers here answer a few GETs and POSTs,
and aiohttp cost 12 MB of resident memory for them (an idle agent is meant to
stay under 50 MB); h11 costs 0.3 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

from .logs import Summary

log = logging.getLogger("floorlink.http")

MAX_BODY = 1 << 20  # the largest request body: control commands are a few ids
READ_SIZE = 65536
LINGER_SECONDS = 2.0  # after refusing a request, how long its body is read out


@dataclass(frozen=True)
class Limits:
    """What one peer may take. A browser, curl or Prometheus needs a connection or two and
    sends a request in milliseconds; the limits stop a peer on the plant network (or a
    stuck script) from holding the agent's file descriptors, which its PLCs, uplinks and
    buffer need."""

    max_connections: int = 64  # connections beyond these are closed at once
    idle_seconds: float = 60.0  # a keep-alive connection with nothing to say is closed
    request_seconds: float = 10.0  # a request's head and body arrive within this, in total
    write_seconds: float = 10.0  # a peer that does not read our answer is dropped after this
    spare_descriptors: int = 256  # kept free for the rest of the agent, whatever the cap


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes
    remote: str
    socket: socket.socket | None  # the connection's socket, for SO_PEERCRED on Unix sockets

    def cookie(self, name: str) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON answers 400."""
        try:
            return json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HttpError(400, f"the request body is not JSON: {exc}\n") from exc


@dataclass
class Response:
    status: int = 200
    body: bytes | AsyncIterator[bytes] = b""  # an iterator is sent chunked, as it comes
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
             headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, text.encode(), content_type, headers or [])

    @classmethod
    def json(cls, value: Any, status: int = 200,
             dumps: Callable[[Any], str] = json.dumps) -> Response:
        return cls(status, dumps(value).encode(), "application/json; charset=utf-8")


class HttpError(Exception):
    """Raised by a handler to answer with a status, a plain-text body and headers."""

    def __init__(self, status: int, text: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(text)
        self.response = Response.text(text, status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]
Middleware = Callable[[Request, Handler], Awaitable[Response]]


class HttpServer:
    def __init__(self, routes: dict[tuple[str, str], Handler],
                 middleware: Middleware | None = None, limits: Limits | None = None,
                 headers: list[tuple[str, str]] | None = None, name: str = "http") -> None:
        self.routes = routes  # (method, path) -> handler; GET routes also answer HEAD
        self.middleware = middleware
        self.limits = limits or Limits()
        self.headers = headers or []  # sent with every answer (security headers)
        self.refused = 0  # connections closed at once: over the cap or short of descriptors
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._refusals = Summary(log, f"{name}: refused %d connection(s): %s")

    async def start_tcp(self, host: str, port: int) -> None:
        """Listen on host:port. OSError if the port is taken: the caller must not start."""
        self._server = await asyncio.start_server(self._on_connection, host, port)

    async def start_unix(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._on_connection, path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):  # keep-alive peers would hold wait_closed
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        why = self._over_limit()
        if why is not None:
            self.refused += 1
            self._refusals.count(why)
            writer.transport.abort()  # no goodbye: a flood gets nothing to wait for
            return
        self._connections.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            pass  # the peer went away or spoke nonsense after we answered: nothing to add
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                     response: Response, head_only: bool = False) -> None:
        await _send(conn, writer, response, head_only, self.headers, self.limits.write_seconds)

    def _over_limit(self) -> str | None:
        if len(self._connections) >= self.limits.max_connections:
            return (f"{self.limits.max_connections} are open, the most this server keeps; "
                    "a client is opening connections and not closing them")
        left = descriptors_left()
        if left is not None and left < self.limits.spare_descriptors:
            return (f"only {left} file descriptors are left, kept for PLCs, uplinks and the "
                    "buffer; raise LimitNOFILE= in the unit if this is normal load")
        return None

    async def _converse(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        peer = writer.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else "local"
        sock = writer.get_extra_info("socket")
        while True:
            try:
                request = await self._read_request(conn, reader, remote, sock)
            except TimeoutError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    return  # an idle keep-alive connection: close without a word
                if conn.our_state is h11.SEND_RESPONSE:
                    await self._reply(conn, writer, Response.text(
                        "request timeout: the request did not arrive in time\n", 408))
                return
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    await self._reply(conn, writer, Response.text(f"bad request: {exc}\n", status))
                return
            except HttpError as exc:  # a body too large or ambiguous: answered, then hung up
                await self._reply(conn, writer, exc.response)
                await _linger(reader, writer)
                return
            if request is None:
                return
            response = await self._answer(request)
            await self._reply(conn, writer, response, head_only=request.method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            remote: str, sock: socket.socket | None) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # set by the request's first byte
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if deadline is None and (conn.trailing_data[0] or conn.their_state
                                         is not h11.IDLE):
                    deadline = loop.time() + self.limits.request_seconds
                # A trickled head (a byte every few seconds) meets the total deadline;
                # a quiet keep-alive connection, the idle one.
                async with asyncio.timeout_at(deadline if deadline is not None
                                              else loop.time() + self.limits.idle_seconds):
                    data = await reader.read(READ_SIZE)
                if deadline is None and data:
                    deadline = loop.time() + self.limits.request_seconds
                conn.receive_data(data)  # b"" means the peer closed
            elif isinstance(event, h11.Request):
                head = event
                if _framed_twice(event):
                    # RFC 9112 §6.1: a message with both may be an attempt at request
                    # smuggling through a proxy; refuse it and close the connection.
                    raise HttpError(400, "bad request: both Content-Length and "
                                         "Transfer-Encoding; send one\n")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise HttpError(413, f"request body over {MAX_BODY} bytes\n")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head, bytes(body), remote, sock)
            else:  # ConnectionClosed, or PAUSED after a peer that never reads our answer
                return None

    async def _answer(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = self.routes.get((method, request.path))
        if handler is None:
            allowed = sorted(m for m, p in self.routes if p == request.path)
            if allowed:
                return Response.text("method not allowed\n", 405,
                                     headers=[("Allow", ", ".join(allowed))])
            return Response.text("not found\n", 404)
        try:
            if self.middleware is not None:
                return await self.middleware(request, handler)
            return await handler(request)
        except HttpError as exc:
            return exc.response
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return Response.text("internal error; the agent's log says why\n", 500)


def _framed_twice(head: h11.Request) -> bool:
    names = {name.lower() for name, _ in head.headers}
    return b"content-length" in names and b"transfer-encoding" in names


def descriptors_left() -> int | None:
    """File descriptors this process may still open, or None where that cannot be told."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
    return None if soft == resource.RLIM_INFINITY else soft - used


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read out what the peer is still sending before closing, so that it gets to read
    our answer: closing with unread data makes the kernel reset the connection."""
    with contextlib.suppress(Exception):
        writer.write_eof()
        async with asyncio.timeout(LINGER_SECONDS):
            while await reader.read(READ_SIZE):
                pass


def _request(head: h11.Request, body: bytes, remote: str,
             sock: socket.socket | None) -> Request:
    target = urlsplit(head.target.decode("latin-1"))
    headers = {name.decode("latin-1").lower(): value.decode("latin-1")
               for name, value in head.headers}
    return Request(method=head.method.decode("ascii"), path=target.path or "/",
                   query=dict(parse_qsl(target.query)), headers=headers, body=body,
                   remote=remote, socket=sock)


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response,
                head_only: bool, headers: list[tuple[str, str]], write_seconds: float) -> None:
    """TimeoutError if the peer does not take the answer within `write_seconds`."""
    async with asyncio.timeout(write_seconds):
        await _write(conn, writer, response, head_only, headers)


async def _write(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response,
                 head_only: bool, extra: list[tuple[str, str]]) -> None:
    names = {name.lower() for name, _ in response.headers}
    headers = [("Content-Type", response.content_type), *response.headers,
               *((name, value) for name, value in extra if name.lower() not in names)]
    body = response.body
    if isinstance(body, bytes) and not head_only:
        headers.append(("Content-Length", str(len(body))))
    # Without a length h11 sends the body chunked (to an HTTP/1.0 peer: until it closes).
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers,
                                        reason=HTTPStatus(response.status).phrase.encode())))
    if not head_only:
        if isinstance(body, bytes):
            writer.write(conn.send(h11.Data(data=body)))
        else:
            async for chunk in body:
                if chunk:
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
