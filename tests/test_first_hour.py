"""A plant engineer's first hour, the README's way: `floorlink init` for one Modbus PLC,
check-config, probe, then `run --watch` until the first event shows, against a real
Modbus TCP server on loopback. And every starter file loads as written."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, floorlink_command, free_port, wait_until
from plc_peers import ModbusPeer

from agent.settings import load_config_text
from agent.starter import PROTOCOLS, starter_text


def _watch(folder: Path, env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(floorlink_command("run", "-c", "floorlink.yaml", "--watch"),
                                cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_starter_loads_and_names_the_states_and_the_telemetry_topic(
        tmp_path: Path, protocol: str) -> None:
    target = "10.0.0.5:502" if protocol == "modbus" else "opc.tcp://10.0.0.5:4840"
    text = starter_text(protocol, target)
    config = load_config_text(text, f"{protocol}.yaml", tmp_path)
    assert [d.id for d in config.devices] == ["plc"]
    assert "running, idle, down, setup, planned_stop" in text  # beside state.map
    assert "floorlink/my-plant/_/_/plc/telemetry" in text


def test_init_refuses_what_it_cannot_use_and_never_overwrites(tmp_path: Path) -> None:
    def init(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(floorlink_command("init", *args), cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    assert init("--modbus", "10.0.0.5:99999").returncode == 64
    assert "HOST:PORT" in init("--modbus", "10.0.0.5:99999").stderr
    assert "opc.tcp://10.0.0.5:4840" in init("--opcua", "10.0.0.5").stderr
    assert init("--modbus", "10.0.0.5").returncode == 0
    (tmp_path / "floorlink.yaml").write_text("# edited by hand\n")
    again = init("--modbus", "10.0.0.5")
    assert again.returncode == 73
    assert "--force" in again.stderr
    assert (tmp_path / "floorlink.yaml").read_text() == "# edited by hand\n"


async def test_from_init_to_the_first_event_in_watch_mode(tmp_path: Path) -> None:
    plc = ModbusPeer()  # every register reads 1: state 1 is `running` in the starter
    await plc.start()
    env = {**os.environ, "FLOORLINK_STATUS__PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}

    def floorlink(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(floorlink_command(*args), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    try:
        made = await asyncio.to_thread(floorlink, "init", "--modbus", f"127.0.0.1:{plc.port}")
        assert made.returncode == 0, made.stderr
        assert "floorlink run -c floorlink.yaml --watch" in made.stdout
        checked = await asyncio.to_thread(floorlink, "check-config", "-c", "floorlink.yaml")
        assert (checked.returncode, checked.stdout.strip()) == (0, "ok"), checked.stderr
        probed = await asyncio.to_thread(floorlink, "probe", "-c", "floorlink.yaml", "plc")
        assert probed.returncode == 0, probed.stdout + probed.stderr
        out = tmp_path / "watch.out"
        agent = await asyncio.to_thread(_watch, tmp_path, env, out)
        try:
            await asyncio.to_thread(
                wait_until, lambda: "press-1  machine.state_changed  (first seen) -> running"
                in out.read_text(), 30, "the first event on the console")
        finally:
            agent.terminate()
            await asyncio.to_thread(agent.wait, 20)
        assert (tmp_path / "floorlink.db").exists()  # the buffer sits beside the config
        assert "Traceback" not in out.read_text()
    finally:
        await plc.stop()
    (REPO / "test-artifacts").mkdir(exist_ok=True)
    (REPO / "test-artifacts" / "first-hour.txt").write_text(
        "$ floorlink init --modbus 127.0.0.1:PORT\n" + made.stdout
        + "$ floorlink check-config -c floorlink.yaml\n" + checked.stdout
        + "$ floorlink run -c floorlink.yaml --watch\n" + out.read_text())
