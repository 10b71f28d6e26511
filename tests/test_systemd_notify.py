"""sd_notify as systemd sees it: READY only once the agent serves, WATCHDOG only while
derivation goes round, STOPPING on the way out, through a NOTIFY_SOCKET the test owns."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, floorlink_command, free_port, port_open

from agent.app import Agent
from agent.events import Event
from agent.settings import load_config_text

CONFIG = """
site: plant
agent: {{id: edge-1}}
devices:
  - {{id: plc, protocol: modbus_tcp, host: 127.0.0.1, port: {modbus_port}, poll_interval: 100ms,
     tags: [{{name: state, register: 40001}}]}}
assets:
  - {{id: press, state: {{tag: plc.state, map: {{1: running, 3: down}}}}}}
buffer: {{path: {buffer}}}
status: {{port: {status_port}}}
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()


def config_text(tmp_path: Path) -> tuple[str, int]:
    status_port = free_port()
    return CONFIG.format(modbus_port=free_port(), status_port=status_port,
                         buffer=tmp_path / "buffer.db"), status_port


def test_ready_after_the_status_port_binds_then_watchdog_then_stopping(
        tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    text, status_port = config_text(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000", "PATH": "/usr/bin:/bin"}
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(floorlink_command("run", "-c", str(config)), cwd=REPO, env=env,
                             stdout=log, stderr=log)
    try:
        sock.settimeout(30)
        first = sock.recv(4096).decode()
        assert first == "READY=1"
        # READY means served: the status port is bound before systemd hears of it.
        assert port_open(status_port)
        sock.settimeout(2)
        pings = [sock.recv(4096).decode() for _ in range(5)]
        assert pings == ["WATCHDOG=1"] * 5
        agent.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert agent.wait(10) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        log.close()


def test_no_ready_for_a_config_that_does_not_load(
        tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    config = tmp_path / "config.yaml"
    config.write_text("site: plant\ndevices: []\n")
    result = subprocess.run(floorlink_command("run", "-c", str(config)), cwd=REPO,
                            env={"NOTIFY_SOCKET": path, "PATH": "/usr/bin:/bin"},
                            capture_output=True, timeout=30)
    assert result.returncode == 78  # RestartPreventExitStatus=78: no restart loop
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


async def test_watchdog_stops_while_derivation_is_stalled_and_resumes_after(
        tmp_path: Path, notify_socket: tuple[socket.socket, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    text, _ = config_text(tmp_path)
    agent = Agent(load_config_text(text, "config.yaml", tmp_path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def pings_within(seconds: float) -> list[float]:
        seen: list[float] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
            except TimeoutError:
                break
            if message == b"WATCHDOG=1":
                seen.append(time.monotonic())
        return seen

    running = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.ready.wait(), 20)
        assert len(await pings_within(1.0)) >= 5
        pipeline = agent.pipeline
        assert pipeline is not None
        release = asyncio.Event()
        real_step = pipeline.step

        async def stalled(batches: list[object]) -> list[Event]:
            await release.wait()  # a derivation wedged on something that never returns
            return await real_step(batches)  # type: ignore[arg-type]

        monkeypatch.setattr(pipeline, "step", stalled)
        stalled_at = time.monotonic()
        await pings_within(3.0)  # grace: 2 s without the loop going round
        assert await pings_within(2.0) == [], "watchdog still fed while derivation is stuck"
        assert time.monotonic() - stalled_at >= 5
        monkeypatch.setattr(pipeline, "step", real_step)
        release.set()
        assert len(await pings_within(1.5)) >= 5, "watchdog not fed again after recovery"
    finally:
        agent.request_stop()
        await asyncio.wait_for(running, 15)
