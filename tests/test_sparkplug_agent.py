"""The Sparkplug uplink in a whole agent on the simulated line, against Mosquitto, read
by npm's sparkplug-payload: a kill -9 is the broker's NDEATH with the dead session's
bdSeq; the next start is born with the next bdSeq and the values committed before the
kill, even with the PLCs gone; a reload that changes a tag's type is a new session whose
births map the same aliases to the new datatype."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LINE_CONFIG, AgentProcess, Broker, Line, free_port, wait_until
from sparkplug_peer import Host, NodeCodec, bd_seq, metric

from buffer.states import STATE_ROWS, from_rows

GROUP, NODE = "Plant A", "test-edge"


def sparkplug_config(line: Line, broker: Broker, workdir: Path, press2_state: str = "") -> str:
    text = LINE_CONFIG.format(opcua_port=line.opcua_port, modbus_port=line.modbus_port,
                              mqtt_port=broker.port, status_port=free_port(),
                              micro_stop="1.5s", buffer=workdir / "buffer.db")
    text = text.replace(
        f"  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {broker.port}, max_inflight: 20}}",
        f"  - {{id: scada, type: sparkplug, group_id: {GROUP}, host: 127.0.0.1, "
        f"port: {broker.port}, reconnect_max: 1s}}")
    text = text.replace('{name: state, node: "nsu=urn:floorlink:sim;s=Press1.State"}',
                        '{name: state, node: "nsu=urn:floorlink:sim;s=Press1.State", '
                        "publish: on_change}")
    return text.replace("{name: state, register: 40001}",
                        f"{{name: state, register: 40001, publish: on_change{press2_state}}}")


@pytest.fixture
def host(broker: Broker, node_decoder: NodeCodec, node_encoder: NodeCodec) -> Iterator[Host]:
    watcher = Host(broker.port, node_decoder, node_encoder, GROUP, NODE)
    yield watcher
    watcher.stop()


@contextlib.contextmanager
def agent_on_the_line(tmp_path: Path, broker: Broker, host: Host,
                      seed: int) -> Iterator[tuple[Line, AgentProcess]]:
    """The simulated line and an agent with the Sparkplug uplink, both born; afterwards,
    a clean stop and no traceback."""
    line = Line(tmp_path, seed=seed, duration=120)
    agent = AgentProcess(tmp_path, sparkplug_config(line, broker, tmp_path))
    agent.start()
    line.go()
    try:
        wait_until(lambda: len(host.messages("DBIRTH")) == 2, 30, f"births\n{agent.log()}")
        yield line, agent
    finally:
        code = agent.stop()
        line.stop()
    assert code == 0
    assert "Traceback" not in agent.log()


def committed_state(buffer: Path, asset: str) -> dict[str, Any]:
    """The state as the agent reads it back: its document with its memories (states.py)."""
    with sqlite3.connect(f"file:{buffer}?mode=ro", uri=True) as db:
        states = from_rows(db.execute(STATE_ROWS))
    return dict(json.loads(states[asset]))


def test_a_kill_is_the_will_and_the_next_start_is_born_from_the_buffer(
        tmp_path: Path, broker: Broker, host: Host) -> None:
    with agent_on_the_line(tmp_path, broker, host, seed=11) as (line, agent):
        wait_until(lambda: any(m.get("alias") is not None and "name" not in m
                               for _, d in host.messages("NDATA") for m in d["metrics"]),
                   30, f"asset metrics as NDATA\n{agent.log()}")
        wait_until(lambda: len(host.messages("DDATA")) >= 2, 30, "tag values as DDATA")
        [(_, nbirth)] = host.messages("NBIRTH")
        assert bd_seq(nbirth) == 0

        agent.kill()
        wait_until(lambda: len(host.messages("NDEATH")) == 1, 10, "the broker's will")
        assert bd_seq(host.messages("NDEATH")[0][1]) == 0
        line.stop()  # the PLCs are gone too: whatever the next births say, the buffer said
        press2 = committed_state(tmp_path / "buffer.db", "press-2")
        state_tag = press2["telemetry"]["press2-plc.state"]

        agent.start()
        wait_until(lambda: len(host.messages("NBIRTH")) == 2, 30, f"rebirth\n{agent.log()}")
        nbirth = host.messages("NBIRTH")[1][1]
        assert bd_seq(nbirth) == 1
        assert metric(nbirth, "press-2/State")["value"] == press2["machine_state"]
        wait_until(lambda: len(host.messages("DBIRTH")) == 4, 10, "device births")
        dbirth = next(d for t, d in host.messages("DBIRTH")[2:] if t.endswith("/press2-plc"))
        assert metric(dbirth, "state")["value"] == state_tag["published_value"]
        # Then each driver finds its PLC gone: device.status offline, a DDEATH each.
        wait_until(lambda: len(host.messages("DDEATH")) == 2, 30, f"deaths\n{agent.log()}")
    wait_until(lambda: len(host.messages("NDEATH")) == 2, 10, "the clean stop's NDEATH")
    assert bd_seq(host.messages("NDEATH")[1][1]) == 1


def test_a_reload_that_changes_a_type_is_a_new_session_with_the_same_aliases(
        tmp_path: Path, broker: Broker, host: Host) -> None:
    with agent_on_the_line(tmp_path, broker, host, seed=12) as (line, agent):
        before = next(d for t, d in host.messages("DBIRTH") if t.endswith("/press2-plc"))
        assert metric(before, "state")["type"] == "UInt16"

        agent.config.write_text(sparkplug_config(line, broker, tmp_path, ", type: int16"))
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(host.messages("NBIRTH")) == 2, 30, f"new births\n{agent.log()}")
        assert "restarting uplinks scada" in agent.log()
        [(_, death)] = host.messages("NDEATH")  # the old session ended cleanly
        assert bd_seq(death) == 0
        assert bd_seq(host.messages("NBIRTH")[1][1]) == 1
        wait_until(lambda: len(host.messages("DBIRTH")) == 4, 10, "device births")
        after = next(d for t, d in host.messages("DBIRTH")[2:] if t.endswith("/press2-plc"))
        assert metric(after, "state")["type"] == "Int16"
        assert metric(after, "state")["alias"] == metric(before, "state")["alias"]

        # The host reads the next values by the alias the new births gave.
        alias = metric(after, "state")["alias"]
        reborn = next(i for i, (t, _) in enumerate(host.raw) if "/NBIRTH/" in t
                      and i > host.raw.index(next(r for r in host.raw if "/NDEATH/" in r[0])))

        def values_since() -> list[dict[str, Any]]:
            return [m for t, d in host.messages()[reborn:] if "/DDATA/" in t
                    and t.endswith("/press2-plc") for m in d["metrics"]
                    if m["alias"] == alias]

        wait_until(lambda: len(values_since()) >= 2, 30, "press2-plc's state after the reload")
        assert {m["type"] for m in values_since()} == {"Int16"}
