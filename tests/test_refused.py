"""A broker that refuses the agent: said clearly, retried calmly, nothing dropped."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import LINE_CONFIG, AgentProcess, Broker, Line, free_port, wait_until


def test_bad_credentials_are_reported_without_a_tight_loop_and_events_stay_buffered(
        tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(workdir)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(workdir / "passwd"), "floorlink",
                    "right-password"], check=True)
    broker.conf.write_text(broker.conf.read_text().replace(
        "allow_anonymous true", f"allow_anonymous false\npassword_file {workdir}/passwd"))
    broker.start()
    line = Line(tmp_path, seed=3, duration=5)
    status_port = free_port()
    config = LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=status_port, micro_stop="2s", buffer=tmp_path / "buffer.db")
    config = config.replace(
        "max_inflight: 20}",
        "max_inflight: 20, username: floorlink, password: '${env:TEST_MQTT_PASSWORD}'}")
    os.environ["TEST_MQTT_PASSWORD"] = "wrong-password"
    agent = AgentProcess(tmp_path, config)
    try:
        agent.start()

        def status() -> dict[str, object]:
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status",
                                        timeout=5) as answer:
                return dict(json.load(answer))

        def refused() -> bool:
            try:
                uplink = status()["uplinks"][0]  # type: ignore[index]
            except OSError:
                return False
            return "refused the connection" in str(uplink["last_error"])

        wait_until(refused, 30, "the refusal to show on the status page")
        time.sleep(6)
        uplink = status()["uplinks"][0]  # type: ignore[index]
        assert "Not authorized" in uplink["last_error"] or "authoris" in uplink["last_error"]
        assert uplink["connected"] is False
        backlog = status()["buffer"]["backlog"]["broker"]  # type: ignore[index]
        assert sum(backlog.values()) > 0, "events wait in the buffer"
        log = agent.log()
        assert log.count("refused the connection") == 1, "said once, not on every attempt"
        assert "check username/password" in log
        attempts = (workdir / "mosquitto.log").read_text().count("not authorised")
        assert 1 <= attempts <= 8, f"{attempts} attempts in ~10 s: no tight loop"
        assert "wrong-password" not in log
    finally:
        os.environ.pop("TEST_MQTT_PASSWORD", None)
        agent.stop()
        line.stop()
        broker.stop()
