"""A three-node NATS cluster with JetStream and its MQTT listener, on loopback, for the
failover tests (tests/test_mqtt_failover.py) and the plant-scale bench: Debian's
nats-server, started like Mosquitto.

NATS keeps MQTT sessions, retained messages and QoS 1 messages in JetStream streams,
replicated across the nodes, so a client that moves to another node finds its session
there, and a subscriber on any node gets what was published on any other.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from .ports import free_ports

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"


class NatsCluster:
    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        self.workdir = workdir
        ports = free_ports(nodes * 4)
        self.client_ports = ports[0:nodes]
        self.route_ports = ports[nodes:2 * nodes]
        self.mqtt_ports = ports[2 * nodes:3 * nodes]
        self.http_ports = ports[3 * nodes:4 * nodes]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self.confs = [self._write_conf(n) for n in range(nodes)]

    def _write_conf(self, n: int) -> Path:
        routes = ", ".join(f'"nats-route://127.0.0.1:{port}"'
                           for m, port in enumerate(self.route_ports) if m != n)
        store = self.workdir / f"n{n}"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"n{n}.conf"
        # One node is a plain JetStream server: a cluster block would have it wait for peers.
        cluster = "" if len(self.route_ports) == 1 else f"""cluster {{
  name: floorlink-test
  listen: 127.0.0.1:{self.route_ports[n]}
  routes: [{routes}]
}}"""
        conf.write_text(f"""
server_name: n{n}
listen: 127.0.0.1:{self.client_ports[n]}
http: 127.0.0.1:{self.http_ports[n]}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 512MB
}}
{cluster}
mqtt {{
  listen: 127.0.0.1:{self.mqtt_ports[n]}
  # Sessions, retained and QoS 1 messages on all three nodes: with one node down, the
  # other two still make a quorum (with two replicas, losing one of them stops them).
  stream_replicas: {len(self.mqtt_ports)}
  consumer_replicas: {len(self.mqtt_ports)}
  # How long a QoS 1 message waits for a subscriber's PUBACK before it is sent again.
  ack_wait: "5s"
}}
""")
        return conf

    def start(self, n: int | None = None) -> None:
        for node in range(len(self.procs)) if n is None else [n]:
            with (self.workdir / f"n{node}.log").open("ab") as log:
                self.procs[node] = subprocess.Popen(
                    [NATS_SERVER, "-c", str(self.confs[node])], stdout=log, stderr=log)

    def wait_ready(self, timeout: float = 60, streams_only: bool = False) -> None:
        """Until every running node says JetStream is current (its /healthz). With
        `streams_only`, until each holds a current replica of every stream: a node started
        again under load can take minutes to bring the replica of a busy subscriber's
        consumer up to date (nats-server 2.9), and serves MQTT long before that. Without
        its stream replicas current, though, the next node killed would leave the streams
        without a quorum."""
        deadline = time.monotonic() + timeout
        for node, proc in enumerate(self.procs):
            if proc is None:
                continue
            while not (self.streams_current(node) if streams_only else self.healthy(node)):
                if proc.poll() is not None:
                    raise RuntimeError(f"nats node n{node} exited: {self.log(node)[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats node n{node} not ready in {timeout:g} s: "
                                       f"{self.log(node)[-2000:]}")
                time.sleep(0.2)

    def healthy(self, node: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[node]}/healthz",
                                        timeout=2) as answer:
                return bool(json.loads(answer.read()).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def streams_current(self, node: int) -> bool:
        """Whether each stream's leader sees `node` as a replica that has caught up (no
        lag), or `node` leads it. Only a leader's view counts: another node's is stale,
        and a replica's `current` flag says only that it was heard from lately."""
        name = f"n{node}"
        checked: set[str] = set()
        for other, proc in enumerate(self.procs):
            if proc is None or proc.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[other]}/jsz"
                                            "?accounts=true&streams=true", timeout=2) as answer:
                    details = json.loads(answer.read()).get("account_details") or []
            except (OSError, ValueError):
                return False
            for stream in (s for account in details for s in account.get("stream_detail") or []):
                cluster = stream.get("cluster") or {}
                if cluster.get("leader") != f"n{other}":
                    continue
                if other != node:
                    mine = [r for r in cluster.get("replicas") or [] if r.get("name") == name]
                    if not mine or mine[0].get("lag", 0) or mine[0].get("offline"):
                        return False
                checked.add(stream["name"])
        return checked >= {"$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs"}

    def kill(self, n: int) -> None:
        proc = self.procs[n]
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs[n] = None

    def stop(self) -> None:
        for n, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.procs[n] = None

    def log(self, n: int) -> str:
        path = self.workdir / f"n{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""
