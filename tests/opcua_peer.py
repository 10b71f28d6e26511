"""node-opcua as an independent OPC UA server (tests/node/opcua-peer.cjs): a PLC whose
stack nobody here wrote, beside the asyncua servers the other OPC UA tests use.

The server holds Press1 with one variable per common type, and hostile ones: NaN,
Infinity, a 1,000,000-character string, a ByteString, and a variable of BaseDataType
whose type changes with its value. `write` changes a value (and its status) at the
source, as a PLC's program does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from conftest import free_port
from sparkplug_peer import NODE_DIR, missing

SCRIPT = NODE_DIR / "opcua-peer.cjs"
NS = "urn:test:line"
START_WITHIN = 90.0  # the first start makes the server's certificate (an RSA key)


class NodeOpcUaServer:
    def __init__(self, pki: Path) -> None:
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plc"
        self.pki = pki
        self.process: asyncio.subprocess.Process | None = None
        self._words: asyncio.Queue[str] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.log: list[str] = []

    async def start(self) -> NodeOpcUaServer:
        why = missing()
        if why is not None:  # a failure, not a skip: a skipped peer proves nothing
            raise RuntimeError(f"the node-opcua peer cannot run: {why}")
        self.process = await asyncio.create_subprocess_exec(
            "node", str(SCRIPT), str(self.port), str(self.pki), cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        await self._expect("ready", START_WITHIN)
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

    async def write(self, name: str, datatype: str, value: Any, status: str | None = None,
                    ) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        line = {"name": name, "type": datatype, "value": value, "status": status}
        self.process.stdin.write(json.dumps(line).encode() + b"\n")
        await self.process.stdin.drain()
        await self._expect("ok", 10)

    async def _expect(self, word: str, within: float) -> None:
        said = await asyncio.wait_for(self._words.get(), within)
        if said != word:
            log = "\n".join(self.log[-15:])
            raise RuntimeError(f"the node-opcua peer said {said or 'nothing (it ended)'!r} "
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


def node(name: str) -> str:
    return f"nsu={NS};s=Press1.{name}"
