"""`floorlink demo`, run as a new user would: events within 30 s, broker state said plainly."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, Broker, floorlink_command, free_port, wait_until


def run_demo_for(tmp_path: Path, mqtt_port: int, seconds: float) -> tuple[str, int]:
    ports = [f"--{n}-port={free_port()}" for n in ("opcua", "modbus", "status")]
    out_path = tmp_path / "demo.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            floorlink_command("demo", "--state-dir", str(tmp_path / "state"), *ports,
                              f"--mqtt-port={mqtt_port}"),
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    wanted = ("downtime.started", "production.confirmed", "quality.hold_raised")
    try:
        wait_until(lambda: all(w in out_path.read_text() for w in wanted), seconds,
                   "downtime, production and hold events from the demo")
    finally:
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(30)
    return out_path.read_text(), code


def test_demo_with_a_broker_shows_every_kind_of_event_and_stops_on_ctrl_c(
        tmp_path: Path, broker: Broker) -> None:
    text, code = run_demo_for(tmp_path, broker.port, 30)
    assert f"MQTT broker 127.0.0.1:{broker.port} reached" in text
    assert "Traceback" not in text
    assert code == 0


def test_demo_without_a_broker_says_so_and_keeps_buffering(tmp_path: Path) -> None:
    text, code = run_demo_for(tmp_path, free_port(), 30)
    assert "NOT reachable: buffering every event in SQLite" in text
    assert "Traceback" not in text
    assert code == 0
