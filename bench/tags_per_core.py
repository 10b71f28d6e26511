"""Tags per core: the most tags one agent process holds at a 1 s poll, half of them
changing every second, with every change delivered and p99 latency under 1 s.

    .venv/bin/python -m bench.tags_per_core [--tags 5000 10000 20000 40000] [--seconds 20]

Ten simulated Modbus TCP PLCs (one process) hold the tags; every second each changes the
first half of its registers. `floorlink run` polls them every second and publishes each
change as telemetry (`publish: on_change`) to Mosquitto at QoS 1; a subscriber in this
process counts the values that arrive and takes each one's latency from its time (the
read's timestamp: Modbus gives none of its own) to its arrival.

On 2 cores the PLCs, Mosquitto and the subscriber would take CPU from the agent, so the
agent is pinned to CPU 1 and everything else to CPU 0 (`taskset`), and the agent's CPU is
read from /proc. A step passes when the agent keeps up: its buffer's backlog does not grow
over the window, p99 is under 1 s, at least 90% of the changes offered arrive within the
window (changes come in one burst a second, so a window's edges move the count by a few
percent) and the agent's core is not full (under 95%). Steps stop at the first failure.
Both telemetry shapes are measured: `per_tag` (the default) and `batch`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .buffer_bench import _Mosquitto
from .e2e import _stop, write_agent_config
from .latency import Arrivals
from .modbus_throughput import start_register_servers
from .ports import free_port, free_ports
from .probe import cpu_seconds, rss_mb

REPO = Path(__file__).resolve().parents[1]
DEVICES = 10
AGENT_CPU, OTHERS_CPU = 1, 0
WARM_UP = 15.0  # seconds from the agent's start to the window: connected, first polls out
PASS_DELIVERED, PASS_P99, PASS_CPU = 0.90, 1.0, 95.0


def _serve(ports: list[int], per_device: int, ready: Any) -> None:
    """Ten PLCs; every second each adds one to the first half of its registers."""
    os.sched_setaffinity(0, {OTHERS_CPU})

    async def main() -> None:
        servers = await start_register_servers(ports, per_device, 0)
        ready.set()
        tick, next_at = 0, time.monotonic()
        while True:
            next_at += 1.0  # on the second, not drifting: one change per tag per second
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            tick += 1
            for server in servers:
                await server.async_setValues(1, 16, 0, [tick & 0xFFFF] * (per_device // 2))

    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(main())


def _config(workdir: Path, ports: list[int], per_device: int, mqtt: int, status: int,
            shape: str) -> Path:
    tags = [{"name": f"r{n}", "register": 40001 + n, "publish": "on_change"}
            for n in range(per_device)]
    devices = [{"id": f"plc{i}", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
                "poll_interval": 1.0, "tags": tags} for i, port in enumerate(ports)]
    return write_agent_config(workdir, f"tpc-{per_device}", devices, shape, mqtt, status)


class _Arrivals(Arrivals):
    """Every telemetry value and its latency, one value at a time or a batch of them."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.counting = True

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        import orjson

        arrived = time.time()
        event = orjson.loads(message.payload)
        if event.get("type") == "floorlink.telemetry.batch.v1":
            stamps = [value["at"] for value in event["data"]["values"]]
        elif event.get("type") == "floorlink.telemetry.v1":
            stamps = [event["time"]]
        else:
            return
        latencies = [arrived - _epoch(stamp) for stamp in stamps]
        with self.lock:
            self.latencies.extend(latencies)


@functools.lru_cache(maxsize=4096)  # the values of one read share their time
def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Step:
    tags: int
    shape: str
    offered: float
    delivered: float
    p50_ms: float
    p99_ms: float
    cpu: float
    rss: float
    backlog_growth: int  # events waiting in the buffer at the window's end, minus at its start
    others_busy: float  # % of the other core (PLCs, broker, subscriber) busy in the window

    @property
    def passed(self) -> bool:
        return (self.delivered >= PASS_DELIVERED * self.offered and self.backlog_growth <= 0
                and self.p99_ms < PASS_P99 * 1000 and self.cpu < PASS_CPU)


def _step(tags: int, shape: str, seconds: float, workdir: Path, mqtt: int,
          arrivals: _Arrivals, warm_up: float) -> Step:
    per_device = tags // DEVICES
    context = multiprocessing.get_context("spawn")
    ports, ready = free_ports(DEVICES), context.Event()
    plcs = context.Process(target=_serve, args=(ports, per_device, ready), daemon=True)
    plcs.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the simulated PLCs did not start")
        status = free_port()
        config = _config(workdir, ports, per_device, mqtt, status, shape)
        agent = subprocess.Popen(["taskset", "-c", str(AGENT_CPU), sys.executable, "-m",
                                  "agent", "run", "-c", str(config), "--log-level", "warning"],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(warm_up)
            if agent.poll() is not None:
                raise RuntimeError(f"floorlink exited with {agent.returncode}")
            arrivals.take()
            start, cpu = time.monotonic(), cpu_seconds(agent.pid)
            backlog = _backlog(status)
            others = _core_times(OTHERS_CPU)
            time.sleep(seconds)
            others_after = _core_times(OTHERS_CPU)
            elapsed = time.monotonic() - start
            used = 100 * (cpu_seconds(agent.pid) - cpu) / elapsed
            growth = _backlog(status) - backlog
            rss = rss_mb(agent.pid)
            latencies = sorted(arrivals.take())
        finally:
            _stop(agent)
    finally:
        plcs.terminate()
        plcs.join(10)

    def quantile(share: float) -> float:
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000 \
            if latencies else float("inf")

    return Step(tags, shape, tags / 2, len(latencies) / elapsed, quantile(0.5),
                quantile(0.99), used, rss, growth,
                100 * (others_after[0] - others[0]) / max(1, others_after[1] - others[1]))


def _core_times(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(field) for field in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                return sum(ticks) - idle, sum(ticks)
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def _backlog(status_port: int) -> int:
    """Events committed and not yet acknowledged by the broker, over every lane: the least
    of five looks over a second, since each second's changes arrive as one burst."""
    import urllib.request

    seen = []
    for _ in range(5):
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status",
                                    timeout=10) as answer:
            view = json.load(answer)
        seen.append(sum(view["buffer"]["backlog"]["broker"].values()))
        time.sleep(0.2)
    return min(seen)


def run(tag_counts: list[int], seconds: float, shapes: tuple[str, ...] = ("per_tag", "batch"),
        warm_up: float = WARM_UP) -> list[Step]:
    os.sched_setaffinity(0, {OTHERS_CPU})  # the subscriber, with the PLCs and the broker
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="floorlink-tpc-") as tmp:
        workdir = Path(tmp)
        broker = _Mosquitto(workdir, cpu=OTHERS_CPU)
        port = broker.port
        arrivals = _Arrivals(port)
        try:
            for shape in shapes:
                for tags in tag_counts:
                    step = _step(tags, shape, seconds, workdir, port, arrivals, warm_up)
                    steps.append(step)
                    print(f"{shape:<8} {step.tags:>7,} tags: offered {step.offered:>8,.0f}/s "
                          f"delivered {step.delivered:>8,.0f}/s  p50 {step.p50_ms:>7.0f} ms  "
                          f"p99 {step.p99_ms:>7.0f} ms  agent CPU {step.cpu:>5.1f}%  "
                          f"RSS {step.rss:>5.1f} MB  backlog {step.backlog_growth:+,}  "
                          f"other core {step.others_busy:.0f}%  "
                          f"{'pass' if step.passed else 'FAIL'}",
                          flush=True)
                    if not step.passed:
                        break
        finally:
            arrivals.stop()
            broker.stop()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tags_per_core")
    parser.add_argument("--tags", type=int, nargs="+",
                        default=[2500, 5000, 7500, 10000, 15000, 20000, 30000, 40000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--shapes", nargs="+", default=["per_tag", "batch"])
    parser.add_argument("--warm-up", type=float, default=WARM_UP)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tags_per_core.json")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two CPUs: one for the agent, one for everything else")
    steps = run(args.tags, args.seconds, tuple(args.shapes), args.warm_up)
    for shape in args.shapes:
        held = [s.tags for s in steps if s.shape == shape and s.passed]
        print(f"tags per core ({shape}): {max(held):,}" if held else
              f"tags per core ({shape}): below {min(args.tags):,}")
    args.out.write_text(json.dumps([{**vars(s), "passed": s.passed} for s in steps], indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
