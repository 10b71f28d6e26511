"""An MQTT uplink with a list of servers, against a real broker cluster: three NATS
nodes (JetStream, MQTT listener) on loopback. The node the agent is on is killed with
SIGKILL, under load, and started again; the agent moves to another node, sends again
what the dead node never acknowledged, and a subscriber on a third node receives every
event of the simulated line, exactly once per id.

And, against two unrelated Mosquittos (no cluster to copy anything): what the uplink
must carry over itself - its retained presence and machine states. And, against one
NATS node: a topic NATS refuses is explained on the status page.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from test_end_to_end import MICRO_STOP, assert_order_and_completeness
from test_mqtt_tls import stored
from truth import counts_covered, observed, summarize

from agent.settings import load_config_text
from agent.uplinks.mqtt import MqttPublisher
from bench.natscluster import NatsCluster

SCENARIO_SECONDS = 45.0  # long enough for two kills, each with its node's return
# A NATS 2.9 node that dies holding stream leaders leaves MQTT connects on the others
# timing out (4 s each) until new leaders are elected: measured 1-35 s to resume.
RESUME_WITHIN = 60.0
KILLS = 2


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is missing: apt-get install nats-server (.ci/run does)")
    instance = NatsCluster(tmp_path / "nats")
    instance.start()
    try:
        instance.wait_ready()
        yield instance
    finally:
        instance.stop()


def _with_servers(config: str, ports: list[int], extra: str = "") -> str:
    servers = ", ".join(f"{{host: 127.0.0.1, port: {port}}}" for port in ports)
    return re.sub(r"host: 127\.0\.0\.1, port: \d+, max_inflight: 20",
                  f"servers: [{servers}], max_inflight: 20, keepalive: 5s, reconnect_max: 2s, "
                  f"topic: 'floorlink/{{site}}/{{asset}}/{{type_path}}'{extra}", config)


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
        return dict(json.load(answer))


def _uplink(port: int) -> dict[str, Any]:
    """The uplink as the status page has it; empty while the agent is starting."""
    try:
        return dict(_status(port)["uplinks"][0])
    except (OSError, IndexError):
        return {}


def test_killing_the_agents_node_moves_it_to_another_and_loses_nothing(
        tmp_path: Path, cluster: NatsCluster) -> None:
    agent_nodes = [0, 1]  # the subscriber stays on node 2, which is never killed
    collector = Collector(cluster.mqtt_ports[2])
    collector.start()
    line = Line(tmp_path, seed=11, duration=SCENARIO_SECONDS)
    status_port = free_port()
    config = LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=1,
        status_port=status_port, micro_stop=f"{MICRO_STOP}s", buffer=tmp_path / "buffer.db")
    # Every value of every tag as telemetry too, for load (about 100 events/s).
    config = config.replace("{name: ", "{publish: every 200ms, name: ")
    agent = AgentProcess(tmp_path, _with_servers(config, [cluster.mqtt_ports[n]
                                                          for n in agent_nodes]))
    try:
        agent.start()
        try:
            wait_until(lambda: {e["subject"] for e in collector.events()}
                       >= {"press-1", "press-2"}, 45, "first events from both presses")
        except AssertionError:
            print(agent.log()[-5000:])
            raise
        line.go()
        resumed: list[float] = []
        killed: int | None = None
        for kill in range(KILLS):
            time.sleep(4)
            # The node whose CONNACK the agent has: from its status page, not from the
            # broker's connection list, which also shows a connection still waiting.
            up = _uplink(status_port)
            assert up.get("connected"), f"kill {kill}: not connected: {up}"
            node = cluster.mqtt_ports.index(int(str(up["target"]).rsplit(":", 1)[1]))
            assert node in agent_nodes, f"kill {kill}: the agent is on node {node}"
            # It stays where it was accepted: not back on the node killed before.
            assert kill == 0 or node != killed, f"kill {kill}: back on node {node}"
            killed = node
            before = len(collector.events())
            killed_at = time.monotonic()
            cluster.kill(node)
            dead = f"127.0.0.1:{cluster.mqtt_ports[node]}"
            wait_until(lambda d=dead: bool(_uplink(status_port).get("connected"))
                       and _uplink(status_port).get("target") != d, RESUME_WITHIN,
                       f"the agent accepted by another node than {dead}\n{agent.log()[-3000:]}")
            wait_until(lambda b=before: len(collector.events()) > b + 5, RESUME_WITHIN,
                       "events to flow again after the move")
            resumed.append(time.monotonic() - killed_at)
            cluster.start(node)  # the node rejoins before the next kill
            cluster.wait_ready(streams_only=True)

        wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2,
                   SCENARIO_SECONDS + 40, "the scenario to end")
        truth = summarize(line.records(), MICRO_STOP)

        wait_until(lambda: counts_covered(truth, collector.unique_events()), 40,
                   f"confirmations to cover the counters\n{agent.log()[-3000:]}")
        time.sleep(3)  # anything extra (a double count) would arrive in this time
        status = _status(status_port)["uplinks"][0]
        assert agent.stop() == 0, agent.log()[-3000:]
        time.sleep(1)
        events = collector.events()
        unique = collector.unique_events()
    finally:
        agent.stop()
        line.stop()
        collector.stop()

    # Nothing lost or counted twice across the moves: every asset's and lane's sequence
    # runs 1..N, and the parts confirmed are the simulator's, exactly. (Holds are not
    # compared with the simulator here: over 45 s a lot can change during a hold, which
    # the agent reports as the old lot's hold ending and the new lot's beginning, and
    # the simulator's record as one hold. test_end_to_end compares them over 22 s.)
    assert_order_and_completeness(unique)
    seen = observed(unique)
    for asset, expected in summarize(line.records(), MICRO_STOP).items():
        assert (seen[asset]["good"], seen[asset]["scrap"]) == (expected.good, expected.scrap)
    by_identity: dict[tuple[str, str, int], str] = {}
    by_id: dict[str, str] = {}
    for event in events:  # a duplicate is only ever the same event again
        body = json.dumps(event, sort_keys=True)
        key = (event["subject"], event["lane"], event["sequence"])
        assert by_identity.setdefault(key, event["id"]) == event["id"], f"{key}: two ids"
        assert by_id.setdefault(event["id"], body) == body, f"{event['id']}: two bodies"
    assert len(unique) > 500, f"only {len(unique)} events: not the load intended"
    assert status["failovers"] == KILLS, status
    assert status["servers"] == [f"127.0.0.1:{cluster.mqtt_ports[n]}" for n in agent_nodes]
    assert all(f["resumed_after_s"] < RESUME_WITHIN for f in status["recent_failovers"])
    print(f"failovers {KILLS}, events {len(unique)} ({len(events) - len(unique)} duplicates), "
          f"events flowing again {', '.join(f'{r:.1f}' for r in resumed)} s after each kill, "
          f"uplink reconnected after {[f['resumed_after_s'] for f in status['recent_failovers']]}")


def _retained(port: int, topic: str) -> list[bytes]:
    """What a late subscriber gets on `topic` right away: the broker's retained message."""
    got: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"late-{time.monotonic_ns()}")
    client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
    client.on_message = lambda c, u, message: got.append(message.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(1.5)
    client.loop_stop()
    client.disconnect()
    return got


def test_the_next_server_gets_the_retained_presence_and_states_again(tmp_path: Path) -> None:
    """Two brokers that share nothing: only the uplink can put its retained presence and
    each asset's state on the second. A later subscriber there must see both."""
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first, second = Broker(first_dir), Broker(second_dir)
    first.start()
    second.start()
    line = Line(tmp_path, seed=11, duration=60)
    status_port = free_port()
    config = LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=1,
        status_port=status_port, micro_stop=f"{MICRO_STOP}s", buffer=tmp_path / "buffer.db")
    agent = AgentProcess(tmp_path, _with_servers(
        config, [first.port, second.port],
        ", state_topic: 'floorlink/{site}/{asset}/state'"))
    try:
        agent.start()
        wait_until(lambda: _uplink(status_port).get("connected"), 30,
                   f"the agent on the first broker\n{agent.log()[-3000:]}")
        wait_until(lambda: _retained(first.port, "floorlink/test-plant/press-1/state"), 30,
                   "press-1's retained state on the first broker")
        assert not _retained(second.port, "floorlink/test-plant/press-1/state")
        assert first.proc is not None
        first.proc.kill()  # SIGKILL: no will, no goodbye
        first.proc.wait()
        wait_until(lambda: _uplink(status_port).get("target") == f"127.0.0.1:{second.port}"
                   and _uplink(status_port)["connected"], 20,
                   f"the move to the second broker\n{agent.log()[-3000:]}")
        states = _retained(second.port, "floorlink/test-plant/+/state")
        assert {json.loads(s)["subject"] for s in states} == {"press-1", "press-2"}
        presence = _retained(second.port, "floorlink/test-plant/test-edge/status")
        assert [json.loads(p)["state"] for p in presence] == ["online"]
        status = _status(status_port)["uplinks"][0]
        assert status["failovers"] == 1
        assert status["recent_failovers"][0]["from"] == f"127.0.0.1:{first.port}"
        page = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/", timeout=5).read()
        assert b"1 failover" in page
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/metrics",
                                         timeout=5).read().decode()
        assert [line.rsplit(" ", 1)[1] for line in metrics.splitlines()
                if line.startswith("floorlink_uplink_failovers_total{")] == ["1.0"]
        assert f'server="127.0.0.1:{second.port}"' in metrics
    finally:
        agent.stop()
        line.stop()
        first.stop()
        second.stop()


async def test_a_broker_that_drops_dotted_topics_is_explained(tmp_path: Path) -> None:
    """NATS drops a client that publishes to a topic holding '.' (measured: "characters
    ' ' and '.' not supported for MQTT topics"), which the default topic's {type} does.
    The uplink sees only connections dropped right after they were accepted: the status
    page must name this cause beside a client id clash, and what to change."""
    node = NatsCluster(tmp_path / "nats", nodes=1)
    node.start()
    try:
        await asyncio.to_thread(node.wait_ready)
        config = load_config_text(f"""
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - {{id: uns, type: mqtt, host: 127.0.0.1, port: {node.mqtt_ports[0]}, reconnect_max: 1s}}
""", "config.yaml", tmp_path)
        uplink = MqttPublisher(config.uplinks[0], config)  # type: ignore[arg-type]
        await uplink.start()
        try:
            delivered = uplink.submit(stored(1))  # floorlink/s/<asset>/<type with a '.'>
            deadline = time.monotonic() + 30
            while "{type_path}" not in (uplink.health.last_error or ""):
                assert time.monotonic() < deadline, uplink.health.last_error
                await asyncio.sleep(0.1)
            assert not delivered.done()  # still waiting in the buffer, not lost
            assert "not supported for MQTT topics" in node.log(0)
        finally:
            await uplink.close()
    finally:
        node.stop()
