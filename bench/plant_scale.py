"""Many lines, one plant: agents against a three-node NATS cluster (JetStream, MQTT).

    .venv/bin/python -m bench.plant_scale [--agents 50] [--seconds 180] [--kill-every 0]

One process simulates every line: a Modbus TCP server per agent, each a small press
(machine state, good and scrap counters, a temperature) that makes a part every second
and stops now and then. Each agent (`floorlink run`, a process of its own, started
0.2 s after the one before) polls its press every second, derives states, downtimes
and production confirmations (every 10 s), publishes the temperature as telemetry, and
lists the three nodes as its MQTT servers, each agent starting from a different one.
A subscriber on the cluster receives every event.

With `--kill-every N`, every N seconds the node that the most agents are on is killed
(SIGKILL), started again, and the next kill waits until it holds a current replica
of every stream again: at most one node is down at a time. This is the longer
failover run; `--agents 1 --kill-every 20 --seconds 300` is one agent under repeated
failovers.

At the end the agents are stopped (SIGTERM: each confirms its production and delivers
what is pending). Every agent's events must have arrived: per agent, asset and lane
the sequence numbers run 1..N with no gap, a duplicate is only ever the same id, and
no agent's buffer holds an event its uplink did not have acknowledged.
Reported: events, duplicates, gaps (must be 0), failovers and the time each agent
took to resume (p50, max), and the CPU and memory of the agents and the broker nodes.
Exit status 1 if any event is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .modbus_throughput import start_register_servers
from .natscluster import NatsCluster
from .ports import free_ports
from .probe import cpu_seconds, rss_mb

REPO = Path(__file__).resolve().parents[1]
STAGGER = 0.2  # seconds between two agents' starts
SETTLE_WITHIN = 60.0  # seconds for every agent to be connected and drained before the stop
RESULTS = Path(__file__).parent / "plant_scale.json"


def _serve_lines(ports: list[int], ready: Any) -> None:
    """A press per port: a part a second while running, a stop of 3-8 s now and then."""

    async def main() -> None:
        servers = await start_register_servers(ports, 8, 0)
        ready.set()
        dice = random.Random(7)
        good = [0] * len(servers)
        stopped_until = [0.0] * len(servers)
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for n, server in enumerate(servers):
                running = now >= stopped_until[n]
                if running and dice.random() < 0.02:
                    stopped_until[n], running = now + dice.uniform(3, 8), False
                if running:
                    good[n] += 1
                state = 1 if running else 3
                values = [state, good[n] & 0xFFFF, 0, 200 + dice.randrange(50)]
                await server.async_setValues(1, 16, 0, values)

    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(main())


def _agent_config(workdir: Path, n: int, modbus: int, status: int,
                  nodes: list[int]) -> Path:
    order = nodes[n % len(nodes):] + nodes[:n % len(nodes)]  # spread the agents
    config = {
        "site": "plant", "agent": {"id": f"line{n:02d}"},
        "devices": [{"id": "plc", "protocol": "modbus_tcp", "host": "127.0.0.1",
                     "port": modbus, "poll_interval": 1.0,
                     "tags": [{"name": "state", "register": 40001},
                              {"name": "good", "register": 40002},
                              {"name": "scrap", "register": 40003},
                              {"name": "temp", "register": 40004, "publish": "on_change"}]}],
        "assets": [{"id": f"press-{n:02d}",
                    "state": {"tag": "plc.state", "map": {1: "running", 3: "down"}},
                    "counters": {"good": "plc.good", "scrap": "plc.scrap"},
                    "production": {"interval": 10.0}}],
        "buffer": {"path": str(workdir / f"line{n:02d}.db")},
        "uplinks": [{"id": "uns", "type": "mqtt", "keepalive": 10.0,
                     "servers": [{"host": "127.0.0.1", "port": port} for port in order],
                     "topic": "floorlink/{site}/{asset}/{type_path}"}],
        "status": {"port": status},
    }
    path = workdir / f"line{n:02d}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class _Subscriber:
    """Every event on the cluster, QoS 1, with a persistent session; moves nodes too."""

    def __init__(self, ports: list[int]) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str, int, str]] = []  # source, subject, lane, seq, id
        self.ports, self.turn = ports, 0
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="plant-consumer",
                                  clean_session=False)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("floorlink/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect("127.0.0.1", ports[-1])
        self.client.loop_start()
        # What is published before the subscription exists is not for this subscriber.
        if not self.subscribed.wait(30):
            raise RuntimeError("the subscriber's subscription was not acknowledged")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.turn += 1  # the next node, as an agent does
        client.connect_async("127.0.0.1", self.ports[self.turn % len(self.ports)])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            event = json.loads(message.payload)
        except ValueError:
            return
        if "specversion" not in event:
            return
        with self.lock:
            self.events.append((event["source"], event["subject"], event["lane"],
                                event["sequence"], event["id"]))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=3) as answer:
            return dict(json.load(answer))
    except (OSError, ValueError):
        return None


def _check(events: list[tuple[str, str, str, int, str]]) -> dict[str, Any]:
    """Gaps per (source, subject, lane), duplicates, and ids reused for another event."""
    streams: dict[tuple[str, str, str], set[int]] = {}
    ids: dict[tuple[str, str, str, int], str] = {}
    clashes = 0
    for source, subject, lane, sequence, event_id in events:
        streams.setdefault((source, subject, lane), set()).add(sequence)
        if ids.setdefault((source, subject, lane, sequence), event_id) != event_id:
            clashes += 1
    gaps = {stream: sorted(set(range(1, max(seen) + 1)) - seen)
            for stream, seen in streams.items() if max(seen) != len(seen)}
    unique = sum(len(seen) for seen in streams.values())
    # floorlink://<site>/<agent>/...: the agent that made the event
    agents = {source.split("/")[3] for source, _, _ in streams}
    return {"events": unique, "duplicates": len(events) - unique,
            "missing": sum(len(missing) for missing in gaps.values()),
            "gaps": {"|".join(stream): missing[:10] for stream, missing in gaps.items()},
            "two_ids_one_event": clashes, "agents_heard": len(agents)}


def run(agents: int, seconds: float, kill_every: float,
        keep: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="floorlink-plant-") as tmp:
        workdir = keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cluster = NatsCluster(workdir / "nats")
        cluster.start()
        cluster.wait_ready()
        ports = free_ports(2 * agents)
        modbus, status = ports[:agents], ports[agents:]
        ready = multiprocessing.get_context("spawn").Event()
        lines = multiprocessing.get_context("spawn").Process(
            target=_serve_lines, args=(modbus, ready), daemon=True)
        lines.start()
        if not ready.wait(60):
            raise RuntimeError("the simulated lines did not start")
        subscriber = _Subscriber(cluster.mqtt_ports)
        procs: list[subprocess.Popen[bytes]] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        kills: list[float] = []
        try:
            for n in range(agents):
                config = _agent_config(workdir, n, modbus[n], status[n], cluster.mqtt_ports)
                with (workdir / f"line{n:02d}.log").open("ab") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "agent", "run", "--log-level", "warning",
                         "-c", str(config)], stdout=log, stderr=log, cwd=REPO, env=env))
                time.sleep(STAGGER)
            started = time.monotonic()
            cpu_start = [cpu_seconds(p.pid) for p in procs]
            # By process: a node killed and started again is a new process, counted whole.
            broker_start = {p.pid: cpu_seconds(p.pid) for p in cluster.procs if p}
            broker_gone = 0.0  # CPU of the node processes killed during the run
            rss_agents: list[float] = []
            rss_brokers: list[float] = []
            next_kill = started + kill_every if kill_every else float("inf")
            while time.monotonic() - started < seconds:
                time.sleep(1.0)
                rss_agents.append(sum(rss_mb(p.pid) for p in procs))
                rss_brokers.append(sum(rss_mb(p.pid) for p in cluster.procs if p))
                if time.monotonic() >= next_kill:
                    alive = {p.pid: cpu_seconds(p.pid) - broker_start.get(p.pid, 0.0)
                             for p in cluster.procs if p}
                    kills.append(_kill_busiest(cluster, status))
                    broker_gone += sum(cpu for pid, cpu in alive.items()
                                       if pid not in {p.pid for p in cluster.procs if p})
                    next_kill = time.monotonic() + kill_every
            elapsed = time.monotonic() - started
            agents_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu_start,
                                                                        strict=True))
            brokers_cpu = broker_gone + sum(cpu_seconds(p.pid) - broker_start.get(p.pid, 0.0)
                                            for p in cluster.procs if p)
            settled = _settle(status, SETTLE_WITHIN)
            statuses = [_status(port) for port in status]
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            exits = [proc.wait(60) for proc in procs]
            time.sleep(3)  # the last deliveries reach the subscriber
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            subscriber.stop()
            lines.terminate()
            cluster.stop()
        with subscriber.lock:
            checked = _check(list(subscriber.events))
        # A gap shows a loss in the middle; one at the end would show as events an agent
        # still holds unacknowledged after its stop (kept for its next start, not lost).
        left = sum(_unacknowledged(workdir / f"line{n:02d}.db") for n in range(agents))
        failovers = [f for s in statuses if s for f in s["uplinks"][0]["recent_failovers"]]
        resumes = [f["resumed_after_s"] for f in failovers if f["resumed_after_s"] is not None]
        return {
            "agents": agents, "seconds": round(elapsed), "kills": len(kills), **checked,
            "events_per_s": round(checked["events"] / elapsed, 1),
            "left_in_buffers": left,
            "settled_after_s": settled,
            "agents_exit_codes_nonzero": sum(1 for code in exits if code != 0),
            "failovers": sum(s["uplinks"][0]["failovers"] for s in statuses if s),
            "resume_p50_s": round(statistics.median(resumes), 2) if resumes else None,
            "resume_max_s": round(max(resumes), 2) if resumes else None,
            "agents_cpu_percent_of_a_core": round(100 * agents_cpu / elapsed, 1),
            "agent_cpu_percent_each": round(100 * agents_cpu / elapsed / agents, 2),
            "agents_rss_mb_total": round(max(rss_agents), 1),
            "agent_rss_mb_each": round(max(rss_agents) / agents, 1),
            "brokers_cpu_percent_of_a_core": round(100 * brokers_cpu / elapsed, 1),
            "brokers_rss_mb_total": round(max(rss_brokers), 1),
        }


def _settle(status_ports: list[int], within: float) -> float:
    """Before the agents stop: wait until each is connected with nothing waiting in its
    buffer, so what a stop leaves behind is the stop's doing, not a failover still in
    progress at the last second (a NATS election takes up to 35 s). Seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        views = [_status(port) for port in status_ports]
        if all(v and v["uplinks"][0]["connected"] and not v["uplinks"][0].get("backlog")
               for v in views):
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def _unacknowledged(path: Path) -> int:
    """Events in an agent's buffer that its uplink has not had acknowledged."""
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM events e WHERE e.position > COALESCE((SELECT position "
            "FROM cursors c WHERE c.uplink = 'uns' AND c.lane = e.lane), 0)").fetchone()
        return int(row[0])
    finally:
        db.close()


def _kill_busiest(cluster: NatsCluster, status_ports: list[int]) -> float:
    """Kill the node most agents are on, start it again, wait until it has caught up."""
    counts: dict[int, int] = {}
    for port in status_ports:
        status = _status(port)
        if status and status["uplinks"][0]["connected"]:
            target = int(status["uplinks"][0]["target"].rsplit(":", 1)[1])
            if target in cluster.mqtt_ports:
                node = cluster.mqtt_ports.index(target)
                counts[node] = counts.get(node, 0) + 1
    node = max(counts, key=lambda n: counts[n]) if counts else 0
    at = time.time()
    cluster.kill(node)
    time.sleep(1.0)
    cluster.start(node)
    cluster.wait_ready(timeout=120, streams_only=True)
    return at


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plant_scale")
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--kill-every", type=float, default=0.0,
                        help="kill the busiest broker node this often (0: never)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (agents' and nodes' logs, configs)")
    args = parser.parse_args()
    result = run(args.agents, args.seconds, args.kill_every, args.keep)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    **result}, indent=2))
    if result["missing"] or result["two_ids_one_event"] or result["left_in_buffers"] or \
            result["agents_heard"] < args.agents:
        print("FAIL: events missing or left undelivered, or an agent never heard from")
        sys.exit(1)


if __name__ == "__main__":
    main()
