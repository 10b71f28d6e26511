"""One refused event does not block the rest; an operator replays it once the
upstream is fixed. Real agent, real Mosquitto whose ACL refuses press-2's topics
(MQTT 5 answers such a PUBLISH with PUBACK 'Not authorized'), and the real
`floorlink buffer` commands: through the control socket while the agent runs,
on the file directly once it is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import (
    LINE_CONFIG,
    REPO,
    AgentProcess,
    Broker,
    Collector,
    Line,
    floorlink_command,
    free_port,
    wait_until,
)

ACL_REFUSING_PRESS_2 = """user floorlink
topic write floorlink/+/press-1/#
topic readwrite floorlink/+/+/status
user reader
topic read floorlink/#
"""
ACL_FIXED = """user floorlink
topic readwrite floorlink/#
user reader
topic read floorlink/#
"""


def floorlink(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(floorlink_command("buffer", *args, "-c", str(config)),
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_refused_events_become_dead_letters_and_replay_delivers_them(tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(workdir)
    for user, password in (("floorlink", "agent-secret"), ("reader", "reader-secret")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "floorlink" else []),
                        str(workdir / "passwd"), user, password], check=True)
    acl = workdir / "acl"
    acl.write_text(ACL_REFUSING_PRESS_2)
    broker.conf.write_text(broker.conf.read_text().replace(
        "allow_anonymous true",
        f"allow_anonymous false\npassword_file {workdir}/passwd\nacl_file {acl}"))
    broker.start()
    collector = Collector(broker.port, credentials=("reader", "reader-secret"))
    collector.start()
    (tmp_path / "mqtt-password").write_text("agent-secret\n")
    line = Line(tmp_path, seed=11, duration=8)
    config = LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=free_port(), micro_stop="1.5s", buffer=tmp_path / "state" / "buffer.db")
    config = config.replace("max_inflight: 20}", (
        "max_inflight: 20, protocol: '5', username: floorlink, "
        f"password: '${{file:{tmp_path}/mqtt-password}}'}}"))
    agent = AgentProcess(tmp_path, config)
    try:
        agent.start()
        wait_until(lambda: any(e["subject"] == "press-1" for e in collector.events()), 45,
                   f"press-1's first events\n{agent.log()}")
        line.go()

        def letters() -> list[dict[str, Any]]:
            return list(json_of(floorlink(agent.config, "dead-letters")))

        wait_until(lambda: len(letters()) >= 5, 40, f"press-2's refused events\n{agent.log()}")
        wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2, 40,
                   "the scenario to end")
        first_seen = letters()
        assert {letter["subject"] for letter in first_seen} == {"press-2"}
        for letter in first_seen:
            assert letter["uplink"] == "broker"
            assert "Not authorized" in letter["reason"]
            assert letter["answer"] == "PUBACK reason: Not authorized"
            assert (letter["attempts"], letter["status"]) == (1, "dead")
        # press-1's events behind the refused ones kept flowing.
        press1 = [e for e in collector.unique_events() if e["subject"] == "press-1"]
        assert len(press1) > 5
        stats = json_of(floorlink(agent.config, "stats"))
        assert stats["dead_letters"]["broker"] >= len(first_seen)

        # The plant IT fixes the ACL; mosquitto re-reads it on SIGHUP.
        acl.write_text(ACL_FIXED)
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: not any(e["subject"] == "press-2" for e in collector.events())
                   and "Reloading config" in (workdir / "mosquitto.log").read_text(), 10,
                   "mosquitto to reload its ACL")
        refused_ids = {letter["event_id"] for letter in letters()}
        replay = floorlink(agent.config, "replay", "--all", "--uplink", "broker")
        assert replay.returncode == 0, replay.stderr
        assert f"{len(refused_ids)} dead letter(s) queued" in replay.stdout

        def arrived() -> set[str]:
            return {e["id"] for e in collector.events() if e["subject"] == "press-2"}

        wait_until(lambda: refused_ids <= arrived(), 30, f"the replayed events\n{agent.log()}")
        wait_until(lambda: not letters(), 10, "the dead-letter list to empty")
        everything = json_of(floorlink(agent.config, "dead-letters", "--all"))
        assert {letter["status"] for letter in everything} == {"delivered"}
        audit = [json.loads(line) for line in
                 (tmp_path / "state" / "audit.log").read_text().splitlines()]
        assert audit[-1]["action"] == "replay"
        assert audit[-1]["count"] == len(refused_ids)
        assert audit[-1]["via"] == "control-socket"
        assert audit[-1]["user"].endswith(f"(uid {os.getuid()})")
        assert agent.stop() == 0, agent.log()

        # Stopped: the same commands open the file directly.
        stats = json_of(floorlink(agent.config, "stats"))
        assert stats["dead_letters"] == {"broker": 0}
        out = tmp_path / "export.jsonl"
        export = floorlink(agent.config, "export", "--since", "1h", "-o", str(out))
        assert export.returncode == 0, export.stderr
        exported = [json.loads(line) for line in out.read_text().splitlines()]
        assert f"{len(exported)} event(s) exported" in export.stderr
        assert all(e["specversion"] == "1.0" for e in exported)
        audit_line = json.loads((tmp_path / "state" / "audit.log").read_text().splitlines()[-1])
        assert (audit_line["action"], audit_line["via"], audit_line["count"]) == (
            "export", "direct", len(exported))
        bad = floorlink(agent.config, "export", "--since", "yesterday")
        assert bad.returncode == 64
        assert "2026-11-23T08:00:00Z" in bad.stderr
    finally:
        agent.stop()
        line.stop()
        collector.stop()
        broker.stop()
