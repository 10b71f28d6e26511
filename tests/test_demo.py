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


def test_the_drain_is_reported_from_delivery_counts_and_ctrl_c_sums_up(
        tmp_path: Path, broker: Broker) -> None:
    """Measured before: after the broker came, "reached" but never "delivering the backlog"
    or "backlog drained" (the backlog drained between two once-a-second looks), the
    reconnect took 17.8 s, and Ctrl-C printed nothing."""
    broker.stop()
    ports = [f"--{n}-port={free_port()}" for n in ("opcua", "modbus", "status")]
    out_path = tmp_path / "demo.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            floorlink_command("demo", *ports, f"--mqtt-port={broker.port}"),
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_until(lambda: "NOT reachable" in out_path.read_text()
                   and "downtime.started" in out_path.read_text(), 30, "a backlog to build")
        broker.start()
        started = time.monotonic()
        wait_until(lambda: "backlog drained" in out_path.read_text(), 15, "the drain line")
        assert time.monotonic() - started < 6  # reconnect_max 2 s in the demo, and slack
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    text = out_path.read_text()
    assert code == 0
    reached = next(line for line in text.splitlines() if "reached: delivering" in line)
    owed = int(reached.split("the backlog of ")[1].split()[0])
    drained = next(line for line in text.splitlines() if "backlog drained" in line)
    assert int(drained.split("backlog drained: ")[1].split()[0]) >= owed > 0
    assert "== demo stopped:" in text
    assert "downtime.started" in text.split("== demo stopped:")[1]
    assert "still buffered" in text
    folder = next(line for line in text.splitlines() if "buffer  " in line).split()[-1]
    if "removed" in text:
        assert not Path(folder).parent.exists()
    else:
        assert "the buffer stays in" in text
