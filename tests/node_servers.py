"""PLCs whose protocol stacks nobody here wrote, run by Node (tests/node):

- node-opcua (opcua-peer.cjs), beside the asyncua servers the other OPC UA tests use: it
  holds Press1 with one variable per common type, and hostile ones: NaN, Infinity, a
  1,000,000-character string, a ByteString, and a variable of BaseDataType whose type
  changes with its value;
- modbus-serial (modbus-peer.cjs), beside pymodbus: holding and input registers, coils
  and discrete inputs, and exception 2 from address 200 up.

Each takes one JSON line per write on stdin, as a PLC's program changes a value.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Self

from conftest import free_port
from sparkplug_peer import NODE_DIR, missing

NS = "urn:test:line"


class NodeServer:
    """A Node peer's process: "ready" when it listens, "ok" (or "refused") per write."""

    script = ""
    package = ""  # the npm package it needs
    start_within = 30.0

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = [str(self.port), *args]
        self.process: asyncio.subprocess.Process | None = None
        self._words: asyncio.Queue[str] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.log: list[str] = []

    async def start(self) -> Self:
        why = missing(self.package)
        if why is not None:  # a failure, not a skip: a skipped peer proves nothing
            raise RuntimeError(f"the Node peer {self.script} cannot run: {why}")
        self.process = await asyncio.create_subprocess_exec(
            "node", str(NODE_DIR / self.script), *self.args, cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        await self._expect("ready", self.start_within)
        return self

    async def _read(self) -> None:
        """Read stdout all the time: node-opcua logs there, and a full pipe would stop
        the server. The protocol's words go to the queue; the rest is kept for errors."""
        assert self.process is not None
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode(errors="replace").strip()
            if text in ("ready", "ok", "refused"):
                await self._words.put(text)
            else:
                self.log = [*self.log[-40:], text[:300]]
        await self._words.put("")  # the process ended

    async def command(self, line: dict[str, Any]) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(line).encode() + b"\n")
        await self.process.stdin.drain()
        await self._expect("ok", 10)

    async def _expect(self, word: str, within: float) -> None:
        said = await asyncio.wait_for(self._words.get(), within)
        if said != word:
            log = "\n".join(self.log[-15:])
            raise RuntimeError(f"{self.script} said {said or 'nothing (it ended)'!r} "
                               f"where {word!r} was due; its log:\n{log}")

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader
        self.process = None


class NodeOpcUaServer(NodeServer):
    script = "opcua-peer.cjs"
    package = "node-opcua-server"
    start_within = 90.0  # the first start makes the server's certificate (an RSA key)

    def __init__(self, pki: Path) -> None:
        super().__init__(str(pki))
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plc"

    async def write(self, name: str, datatype: str, value: Any, status: str | None = None,
                    ) -> None:
        """Set a variable at the source, with a status code's name (default Good)."""
        await self.command({"name": name, "type": datatype, "value": value, "status": status})


class NodeModbusServer(NodeServer):
    script = "modbus-peer.cjs"
    package = "modbus-serial"
    ILLEGAL_FROM = 200  # the first address that answers exception 2

    async def write(self, table: str, address: int, values: list[int] | list[bool]) -> None:
        """Set `values` from `address` (0-based) in holding, input, coil or discrete."""
        await self.command({"table": table, "address": address, "values": values})


def node(name: str) -> str:
    return f"nsu={NS};s=Press1.{name}"
