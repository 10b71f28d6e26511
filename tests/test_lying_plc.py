"""A PLC that answers, but not to what was asked: a Modbus TCP server (written here,
on a real socket) that puts another unit id, or another transaction id, in its answers.

Measured before: pymodbus tracebacks at ERROR several times a second, and a status page
that said only "did not answer within 1s"."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import AgentProcess, free_port, wait_until


class LyingModbus:
    """Answers every read with registers, under a wrong unit or transaction id."""

    def __init__(self, unit: int | None = None, shift_tid: int = 0,
                 miscount: int = 0) -> None:
        self.port = free_port()
        self.unit, self.shift_tid, self.miscount = unit, shift_tid, miscount
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()  # closed by stop(), not left to GC

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


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
        return dict(json.load(answer))


CONFIG = """
site: s
agent: {{id: edge}}
buffer: {{path: {buffer}}}
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: {port}, unit: 1, timeout: 500ms,
     poll_interval: 100ms, max_backoff: 1s, tags: [{{name: state, register: 40001}}]}}
assets: []
status: {{port: {status}}}
"""


@pytest.mark.parametrize(("lie", "said"), [
    ({"unit": 7}, "answered with unit 7, expected 1"),
    ({"shift_tid": 5}, "answered with transaction id"),
    ({"miscount": 4}, "answered with a byte count of 6 for 2 bytes"),
])
async def test_answers_to_another_request_are_named_once_and_never_flood_the_log(
        tmp_path: Path, lie: dict[str, int], said: str) -> None:
    plc = LyingModbus(**lie)
    await plc.start()
    status_port = free_port()
    agent = AgentProcess(tmp_path, CONFIG.format(buffer=tmp_path / "b.db", port=plc.port,
                                                 status=status_port))
    agent.start()
    try:
        await asyncio.to_thread(wait_until, lambda: said in agent.log(), 30,
                                f"the agent to name the lie\n{agent.log()}")
        await asyncio.sleep(5)  # dozens of polls, each answered with the lie
        [device] = (await asyncio.to_thread(status, status_port))["devices"]
        log = agent.log()
    finally:
        agent.stop()
        await plc.stop()
    assert said in (device["last_error"] or ""), device
    assert "Traceback" not in log
    assert "pymodbus" not in log
    lines = [line for line in log.splitlines() if said in line]
    assert 1 <= len(lines) <= 2, log  # once when it goes down, not once per poll
