"""A PLC that answers, but not to what was asked: a Modbus TCP server (written here,
on a real socket) that puts another unit id, or another transaction id, in its answers.

Measured before: pymodbus tracebacks at ERROR several times a second, and a status page
that said only "did not answer within 1s"."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import AgentProcess, free_port, wait_until
from plc_peers import ModbusPeer


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
    plc = ModbusPeer(**lie)
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
