"""A connection flood at the status page does not reach the PLCs.

Measured before: at about 4,000 idle sockets on the status port the agent ran out of file
descriptors; the Modbus reconnect failed for 44 s and asyncio logged "Too many open files"
168,866 times (75 MB in a minute). Here the agent runs with the unit's LimitNOFILE=4096,
5,000 sockets are held open against its status port, and its PLC goes away and comes
back in the middle of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import REPO, floorlink_command, free_port, wait_until
from plc_peers import ModbusPeer

CONFIG = """
site: s
agent: {{id: edge}}
buffer: {{path: {buffer}}}
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: {port}, timeout: 500ms,
     poll_interval: 100ms, max_backoff: 1s, tags: [{{name: state, register: 40001}}]}}
assets: []
status: {{port: {status}}}
"""
SOCKETS = 5000
UNIT_NOFILE = 4096  # systemd/floorlink.service: LimitNOFILE=4096


def _unit_limits() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (UNIT_NOFILE, UNIT_NOFILE))


async def _flood(port: int, sockets: list[asyncio.StreamWriter], stop: asyncio.Event) -> int:
    """Keeps SOCKETS connections open or opening; returns how many were opened in all."""
    opened = 0
    while not stop.is_set():
        sockets[:] = [w for w in sockets if not w.transport.is_closing()]
        for _ in range(SOCKETS - len(sockets)):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                sockets.append(writer)
                opened += 1
        await asyncio.sleep(0.5)
    return opened


def _start_agent(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(floorlink_command("run", "-c", str(config)), cwd=REPO,
                                stdout=log, stderr=log, preexec_fn=_unit_limits)


def _page_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
            return bool(json.load(answer)["agent"])
    except OSError:
        return False


async def test_five_thousand_idle_sockets_do_not_stop_a_plc_reconnect(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, SOCKETS + 1000)), hard))
    plc = ModbusPeer()
    await plc.start()
    status_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(buffer=tmp_path / "b.db", port=plc.port,
                                    status=status_port))
    log_path = tmp_path / "agent.log"
    agent = await asyncio.to_thread(_start_agent, config, log_path)
    sockets: list[asyncio.StreamWriter] = []
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(wait_until, lambda: plc.reads > 5, 30, "the agent to poll")
        flood = asyncio.create_task(_flood(status_port, sockets, stop))
        await asyncio.sleep(3)
        # The PLC goes away (a power cycle) and comes back while the flood goes on.
        await plc.stop()
        await asyncio.sleep(2)
        reads_before = plc.reads
        await plc.start()
        started = time.monotonic()
        await asyncio.to_thread(wait_until, lambda: plc.reads >= reads_before + 20, 15,
                                "the agent to come back to its PLC")
        recovered = time.monotonic() - started
        assert recovered < 5, f"reconnect took {recovered:.1f} s under the flood"
        stop.set()
        opened = await flood
        assert opened >= SOCKETS, "the flood never reached its size"
        assert agent.poll() is None, "the agent died under the flood"
        # Once the flood stops, the technician's page answers again.
        stop.set()
        for writer in sockets:
            writer.close()
        await asyncio.to_thread(wait_until, lambda: _page_answers(status_port), 15,
                                "the page to answer")
    finally:
        stop.set()
        for writer in sockets:
            writer.close()
        await plc.stop()
        agent.terminate()
        await asyncio.to_thread(agent.wait, 20)
    # And the log says how much was refused in a handful of lines.
    text = log_path.read_text()
    assert "Too many open files" not in text
    refusals = [line for line in text.splitlines() if "refused" in line and "connection" in line]
    assert 1 <= len(refusals) <= 5, refusals
    assert len(text) < 20_000, f"{len(text)} bytes of log"
