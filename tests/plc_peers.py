"""PLCs written here, on real sockets, for what no simulator does on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from conftest import free_port


class ModbusPeer:
    """Answers every read with registers (0x0001 each). Honest by default; with `unit`,
    `shift_tid` or `miscount` it answers under a wrong unit id, transaction id or byte
    count."""

    def __init__(self, unit: int | None = None, shift_tid: int = 0,
                 miscount: int = 0) -> None:
        self.port = free_port()
        self.unit, self.shift_tid, self.miscount = unit, shift_tid, miscount
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()  # closed by stop(), not left to GC
        self.reads = 0  # requests answered, over all connections

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                body = await reader.readexactly(length - 1)
                count = struct.unpack(">H", body[3:5])[0]
                payload = bytes([body[0], 2 * count + self.miscount]) + b"\x00\x01" * count
                writer.write(struct.pack(">HHHB", (tid + self.shift_tid) & 0xFFFF, 0,
                                         len(payload) + 1, self.unit or unit) + payload)
                await writer.drain()
                self.reads += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
