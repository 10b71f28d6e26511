"""The control socket: `floorlink buffer ...` talks to the running agent here.

HTTP on a Unix socket in the state directory (aiohttp serves it, httpx calls
it). File permissions decide who may connect (0660: the service user and its
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
from pathlib import Path
from typing import IO

from aiohttp import web

from buffer import Outbox

from ..errors import BufferError
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
        with open(path, "ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


class ControlServer:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.path = socket_path(outbox.path)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/buffer/stats", self._stats)
        app.router.add_get("/buffer/dead-letters", self._dead_letters)
        app.router.add_post("/buffer/replay", self._replay)
        app.router.add_get("/buffer/export", self._export)
        app.router.add_post("/buffer/alarms/clear", self._clear_alarms)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a killed agent; the lock says we own it
        site = web.UnixSite(self._runner, str(self.path))
        await site.start()
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(await operations.stats(self.outbox))

    async def _dead_letters(self, request: web.Request) -> web.Response:
        letters = await operations.dead_letters(
            self.outbox, request.query.get("uplink"), request.query.get("all") == "1")
        return web.json_response(letters)

    async def _replay(self, request: web.Request) -> web.Response:
        body = await request.json()
        count = await operations.replay(self.outbox, body.get("ids"), body.get("uplink"),
                                        _peer(request), VIA)
        return web.json_response({"queued": count})

    async def _export(self, request: web.Request) -> web.StreamResponse:
        since = float(request.query.get("since", "0"))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async for line in operations.export(self.outbox, since, _peer(request), VIA):
            await response.write(line.encode() + b"\n")
        await response.write_eof()
        return response

    async def _clear_alarms(self, request: web.Request) -> web.Response:
        body = await request.json()
        count = await operations.clear_alarms(self.outbox, body.get("key"), _peer(request), VIA)
        return web.json_response({"cleared": count})


def _peer(request: web.Request) -> str:
    """The OS user on the other end of the socket, as the kernel reports it."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        return "unknown"
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return operations.user_name(uid)
