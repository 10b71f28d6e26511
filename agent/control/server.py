"""The control socket: `floorlink buffer ...` talks to the running agent here.

HTTP on a Unix socket in the state directory (agent.httpserve serves it, httpx
calls it). File permissions decide who may connect (0660: the service user and its
group); the kernel tells us who did (SO_PEERCRED), and that name goes into the
audit log. The agent also holds an exclusive lock on `<buffer>.lock`, so a
command can tell "stopped" from "running but not answering".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from buffer import Outbox

from ..errors import BufferError
from ..httpserve import HttpError, HttpServer, Request, Response
from . import operations

VIA = "control-socket"


def socket_path(buffer_path: Path) -> Path:
    return buffer_path.parent / "control.sock"


def lock_path(buffer_path: Path) -> Path:
    return buffer_path.with_name(buffer_path.name + ".lock")


class AgentLock:
    """Held for the agent's lifetime: one agent per buffer, and a sign of life."""

    def __init__(self, buffer_path: Path) -> None:
        self.path = lock_path(buffer_path)
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "ab")  # noqa: SIM115 - held open until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise BufferError(
                f"another floorlink agent is using {self.path.with_suffix('')}; "
                "stop it first, or give this one its own buffer.path") from exc
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @staticmethod
    def held(buffer_path: Path) -> bool:
        path = lock_path(buffer_path)
        if not path.exists():
            return False
        # Read-only: flock needs no write access, and a member of the service group may
        # only read the file (UMask=0027 makes it 0640).
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except PermissionError as exc:
            raise BufferError(
                f"cannot read {path}: run this as the service user, or as a member of its "
                "group (docs/deploy.md)") from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


class ControlServer:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.path = socket_path(outbox.path)
        self._http = HttpServer({
            ("GET", "/buffer/stats"): self._stats,
            ("GET", "/buffer/dead-letters"): self._dead_letters,
            ("POST", "/buffer/replay"): self._replay,
            ("GET", "/buffer/export"): self._export,
            ("POST", "/buffer/alarms/clear"): self._clear_alarms,
        })
        self._started = False

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a killed agent; the lock says we own it
        await self._http.start_unix(str(self.path))
        os.chmod(self.path, 0o660)
        self._started = True

    async def close(self) -> None:
        await self._http.close()
        if self._started:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _stats(self, request: Request) -> Response:
        return Response.json(await operations.stats(self.outbox))

    async def _dead_letters(self, request: Request) -> Response:
        letters = await operations.dead_letters(
            self.outbox, request.query.get("uplink"), request.query.get("all") == "1")
        return Response.json(letters)

    async def _replay(self, request: Request) -> Response:
        body = _body(request, ReplayBody)
        count = await operations.replay(self.outbox, body.ids, body.uplink, _peer(request), VIA)
        return Response.json({"queued": count})

    async def _export(self, request: Request) -> Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError as exc:
            raise HttpError(400, "since must be a Unix time in seconds\n") from exc
        peer = _peer(request)

        async def lines() -> AsyncIterator[bytes]:
            async for line in operations.export(self.outbox, since, peer, VIA):
                yield line.encode() + b"\n"

        return Response(body=lines(), content_type="application/x-ndjson")

    async def _clear_alarms(self, request: Request) -> Response:
        body = _body(request, ClearAlarmsBody)
        count = await operations.clear_alarms(self.outbox, body.key, _peer(request), VIA)
        return Response.json({"cleared": count})


MAX_IDS = 10_000  # event ids one replay may name
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ids: Annotated[list[Name], Field(max_length=MAX_IDS)] | None = None
    uplink: Name | None = None


class ClearAlarmsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: Name | None = None


Body = TypeVar("Body", bound=BaseModel)


def _body(request: Request, model: type[Body]) -> Body:
    """The request body as `model`, or a 400 that says what is wrong with it."""
    try:
        return model.model_validate(request.json())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise HttpError(400, f"bad request body ({problems})\n") from exc


def _peer(request: Request) -> str:
    """The OS user on the other end of the socket, as the kernel reports it."""
    sock = request.socket
    if sock is None:
        return "unknown"
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return operations.user_name(uid)
