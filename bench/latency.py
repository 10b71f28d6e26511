"""Latency from a change in the PLC to its delivery at the broker, against offered load.

    .venv/bin/python -m bench.latency [--seconds 10] [--commit-interval 0 50ms]

An asyncua server in its own process changes N items at 10 Hz, stamping each value
with its SourceTimestamp; `floorlink run` (its own process) subscribes to them and
publishes each change as telemetry (QoS 1) to Mosquitto (its own process); a
subscriber in this process takes the time each event arrives and subtracts the
event's `time`, which is the PLC's SourceTimestamp. Mosquitto routes a QoS 1
message and sends its PUBACK in the same pass, so arrival at the subscriber stands
for the PUBACK. The OPC UA publishing interval (50 ms) is part of the figure.
The first 2 s of each step are not counted (subscriptions settle). Each step also
records the agent's commits per second (one fsync each) and its SIGTERM-to-exit time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .buffer_bench import _Mosquitto
from .opcua_bench import NS, RATE_HZ, _serve
from .ports import free_port
from .probe import metric_total

REPO = Path(__file__).resolve().parents[1]
SETTLE = 2.0
STOP_LIMIT = 10.0  # seconds from SIGTERM to exit that the service unit allows


def _config(workdir: Path, opcua: int, mqtt: int, items: int, status: int,
            commit_interval: str) -> Path:
    tags = "\n".join(f'      - {{name: v{n}, node: "nsu={NS};s=v{n}", publish: on_change}}'
                     for n in range(items))
    path = workdir / f"latency-{items}.yaml"
    path.write_text(f"""
site: bench
agent: {{id: latency}}
devices:
  - id: cell-plc
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:{opcua}/bench
    publishing_interval: 50ms
    tags:
{tags}
buffer: {{path: {workdir / f'latency-{items}-{commit_interval}.db'},
          commit_interval: {commit_interval}}}
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {mqtt}, max_inflight: 100}}
status: {{port: {status}}}
""")
    return path


class Arrivals:
    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.latencies: list[float] = []
        self.counting = False
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"lat-{port}")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("floorlink/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        arrived = time.time()
        if not self.counting:
            return
        try:
            sent = datetime.fromisoformat(json.loads(message.payload)["time"]).timestamp()
        except (ValueError, KeyError):
            return
        with self.lock:
            self.latencies.append(arrived - sent)

    def take(self) -> list[float]:
        with self.lock:
            taken, self.latencies = self.latencies, []
        return taken

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _commits(status: int) -> float:
    """floorlink_buffer_commits_total from the agent's /metrics (nan if unreadable)."""
    try:
        return metric_total(status, "floorlink_buffer_commits_total")
    except OSError:
        return float("nan")


def measure(items_steps: list[int], seconds: float,
            commit_interval: str = "0") -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="floorlink-latency-") as tmp:
        workdir = Path(tmp)
        broker = _Mosquitto(workdir)
        mqtt = broker.port
        arrivals = Arrivals(mqtt)
        try:
            for items in items_steps:
                rows.append(_step(workdir, mqtt, items, seconds, arrivals, commit_interval))
                print(f"{items:5d} items x {RATE_HZ} Hz: {rows[-1]}", flush=True)
        finally:
            arrivals.stop()
            broker.stop()
    return rows


def _step(workdir: Path, mqtt: int, items: int, seconds: float, arrivals: Arrivals,
          commit_interval: str) -> dict[str, Any]:
    opcua = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=_serve, args=(opcua, ready, items), daemon=True)
    server.start()
    agent = None
    stop_s = float("nan")
    try:
        if not ready.wait(120):
            raise RuntimeError("the OPC UA server did not start")
        status = free_port()
        config = _config(workdir, opcua, mqtt, items, status, commit_interval)
        log_path = workdir / f"agent-{items}-{commit_interval}.log"
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config),
                                      "--log-level", "info", "--log-format", "text"],
                                     cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        arrivals.counting = False
        time.sleep(SETTLE + 3)  # connect, subscribe, first values
        arrivals.take()
        arrivals.counting = True
        started, commits_before = time.monotonic(), _commits(status)
        time.sleep(seconds)
        taken = arrivals.take()
        elapsed = time.monotonic() - started
        commits = _commits(status) - commits_before
        arrivals.counting = False
    finally:
        if agent is not None:
            stopping = time.monotonic()
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            stop_s = time.monotonic() - stopping
            if stop_s > STOP_LIMIT:  # the unit's budget: say where the time went
                tail = log_path.read_text(errors="replace").splitlines()[-30:]
                print(f"SIGTERM took {stop_s:.1f} s; the agent's last lines:", *tail,
                      sep="\n  ", flush=True)
        server.terminate()
        server.join(10)
    row = {"commit_interval": commit_interval, "items": items,
           "offered_per_s": items * RATE_HZ, "sigterm_to_exit_s": round(stop_s, 1),
           "commits_per_s": round(commits / elapsed, 1)}
    if not taken:
        return {**row, "delivered_per_s": 0}
    return {**row,
            "delivered_per_s": round(len(taken) / elapsed),
            "p50_ms": round(_percentile(taken, 0.5) * 1000, 1),
            "p99_ms": round(_percentile(taken, 0.99) * 1000, 1),
            "max_ms": round(max(taken) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per step")
    parser.add_argument("--items", type=int, nargs="*", default=[50, 100, 250, 500, 1000],
                        help="items changing at 10 Hz, one step each")
    parser.add_argument("--commit-interval", nargs="*", default=["0"],
                        help="buffer.commit_interval values, one curve each (default: 0, "
                             "floorlink's default)")
    args = parser.parse_args()
    rows = [row for interval in args.commit_interval
            for row in measure(args.items, args.seconds, interval)]
    out = Path(__file__).parent / "latency.json"
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows},
                              indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
