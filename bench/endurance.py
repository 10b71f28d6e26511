"""A compressed soak: the agent at a high rate for --minutes, with faults at random.

    .venv/bin/python -m bench.endurance --minutes 30 --png docs/endurance.png

Peers in their own processes: the simulated line (OPC UA + Modbus TCP, every tag
also published as telemetry every 100 ms), Mosquitto, a subscriber. Every 30-90 s
one fault, chosen at random: the PLCs restart, the broker restarts, the broker
stalls (SIGSTOP: the connection stays open and nothing answers), or the PLCs stall.
RSS and open file descriptors of the agent are recorded every 10 s and plotted.
Exit status 1 if RSS after the warm-up grew by more than 10%, or if the agent died.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ports import free_port
from .probe import rss_mb
from .subscriber import subscribe_until

REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVERY = 10.0
GROWTH_LIMIT = 0.10
FAULTS = ("plc restart", "broker restart", "broker stall", "plc stall")


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def start_mosquitto(workdir: Path, port: int, persistent: bool = False) -> subprocess.Popen[bytes]:
    """A Mosquitto of the benchmark's own on `port`; `persistent` keeps a subscriber's
    session and queued messages across a SIGTERM restart."""
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 10000000\n"
                    + (f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
                       if persistent else "")
                    + ("user root\n" if os.geteuid() == 0 else ""))
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = (workdir / "mosquitto.log").open("ab")
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=log, stderr=log)
    _wait_port(port)
    return broker


def _config(opcua: int, modbus: int, mqtt: int, status: int, buffer: Path) -> str:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import LINE_CONFIG  # the line the end-to-end tests use

    text = LINE_CONFIG.format(opcua_port=opcua, modbus_port=modbus, mqtt_port=mqtt,
                              status_port=status, micro_stop="1.5s", buffer=buffer)
    # Every tag is also telemetry at 10 Hz, polled at 20 Hz: the high rate.
    return (text.replace("poll_interval: 100ms", "poll_interval: 50ms")
            .replace("{name: ", "{publish: every 100ms, name: "))


@dataclass
class Soak:
    workdir: Path
    minutes: float
    seed: int
    opcua: int = field(default_factory=free_port)
    modbus: int = field(default_factory=free_port)
    mqtt: int = field(default_factory=free_port)
    status: int = field(default_factory=free_port)
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # t, RSS MB, fds
    faults: list[tuple[float, str]] = field(default_factory=list)
    received: int = 0
    line: subprocess.Popen[bytes] | None = None
    broker: subprocess.Popen[bytes] | None = None

    def start_line(self) -> None:
        log = (self.workdir / "line.log").open("ab")
        self.line = subprocess.Popen(
            [sys.executable, "-m", "agent", "simulate", "--seed", str(self.seed),
             "--opcua-port", str(self.opcua), "--modbus-port", str(self.modbus)],
            cwd=REPO, stdout=log, stderr=log)
        _wait_port(self.opcua)
        _wait_port(self.modbus)

    def start_broker(self) -> None:
        self.broker = start_mosquitto(self.workdir, self.mqtt)

    def subscribe(self, stop: threading.Event) -> None:
        def on_message(client: Any, userdata: Any, message: Any) -> None:
            self.received += 1

        subscribe_until(self.mqtt, "soak-subscriber", on_message, stop, max_delay=2)

    def fault(self, rng: random.Random, started: float) -> None:
        kind = rng.choice(FAULTS)
        pause = rng.uniform(5, 20)
        self.faults.append((time.monotonic() - started, kind))
        print(f"{(time.monotonic() - started) / 60:5.1f} min  {kind} ({pause:.0f} s)",
              flush=True)
        if kind == "plc restart" and self.line is not None:
            self.line.terminate()
            self.line.wait(15)
            time.sleep(pause)
            self.start_line()
        elif kind == "broker restart" and self.broker is not None:
            self.broker.terminate()
            self.broker.wait(15)
            time.sleep(pause)
            self.start_broker()
        else:
            target = self.broker if kind == "broker stall" else self.line
            assert target is not None
            target.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            target.send_signal(signal.SIGCONT)

    def run(self) -> int:
        rng = random.Random(self.seed)
        self.start_broker()
        self.start_line()
        config = self.workdir / "config.yaml"
        config.write_text(_config(self.opcua, self.modbus, self.mqtt, self.status,
                                  self.workdir / "buffer.db"))
        stop = threading.Event()
        subscriber = threading.Thread(target=self.subscribe, args=(stop,), daemon=True)
        subscriber.start()
        log = (self.workdir / "agent.log").open("ab")
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config),
                                  "--log-level", "warning"], cwd=REPO, stdout=log, stderr=log)
        started = time.monotonic()
        # The first sample after start-up: at 0 s the process is still an empty shell.
        next_sample, next_fault = started + SAMPLE_EVERY, started + rng.uniform(30, 90)
        end = started + self.minutes * 60
        try:
            while time.monotonic() < end:
                if agent.poll() is not None:
                    print(f"the agent died with {agent.returncode}; see {self.workdir}")
                    return 1
                now = time.monotonic()
                if now >= next_sample:
                    self.samples.append((now - started, rss_mb(agent.pid),
                                         len(os.listdir(f"/proc/{agent.pid}/fd"))))
                    next_sample += SAMPLE_EVERY
                if now >= next_fault and now < end - 60:
                    self.fault(rng, started)
                    next_fault = time.monotonic() + rng.uniform(30, 90)
                time.sleep(0.5)
        finally:
            agent.terminate()
            agent.wait(30)
            stop.set()
            for process in (self.line, self.broker):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGCONT)
                    process.terminate()
                    process.wait(15)
        return 0


def growth(samples: list[tuple[float, float, int]], warm_up: float) -> tuple[float, float, float]:
    """RSS just after the warm-up (mean of the first minute after it), at the end (mean
    of the last minute), and the relative growth between them."""
    after = [rss for t, rss, _ in samples if warm_up <= t < warm_up + 60]
    last_t = samples[-1][0]
    end = [rss for t, rss, _ in samples if t >= last_t - 60]
    base, final = sum(after) / len(after), sum(end) / len(end)
    return base, final, (final - base) / base


def plot(soak: Soak, warm_up: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [t / 60 for t, _, _ in soak.samples]
    figure, rss_axis = plt.subplots(figsize=(10, 4.5), dpi=110)
    rss_axis.plot(minutes, [r for _, r, _ in soak.samples], color="tab:blue", label="RSS (MB)")
    rss_axis.set_xlabel("minutes")
    rss_axis.set_ylabel("RSS (MB)", color="tab:blue")
    rss_axis.set_ylim(bottom=0)
    fd_axis = rss_axis.twinx()
    fd_axis.plot(minutes, [f for _, _, f in soak.samples], color="tab:orange",
                 label="open file descriptors")
    fd_axis.set_ylabel("open file descriptors", color="tab:orange")
    fd_axis.set_ylim(bottom=0)
    colours = dict(zip(FAULTS, ("tab:red", "tab:purple", "tab:brown", "tab:gray"),
                       strict=True))
    for at, kind in soak.faults:
        rss_axis.axvline(at / 60, color=colours[kind], alpha=0.35, linewidth=1)
    rss_axis.axvspan(0, warm_up / 60, color="0.9", zorder=0)
    handles = [plt.Line2D([], [], color=c, alpha=0.6, label=k) for k, c in colours.items()]
    rss_axis.legend(handles=handles, loc="lower right", fontsize=8, title="faults",
                    title_fontsize=8)
    base, final, grew = growth(soak.samples, warm_up)
    rss_axis.set_title(f"floorlink soak: {len(soak.faults)} faults, {soak.received:,} messages "
                       f"received; RSS {base:.1f} -> {final:.1f} MB ({grew:+.1%}) after warm-up")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.endurance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warm-up", type=float, default=5.0, help="minutes (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--png", type=Path, default=Path("bench/endurance.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="floorlink-soak-") as tmp:
        soak = Soak(Path(tmp), args.minutes, args.seed)
        status = soak.run()
        if status:
            sys.exit(status)
    warm_up = min(args.warm_up * 60, soak.samples[-1][0] / 3)
    base, final, grew = growth(soak.samples, warm_up)
    fds = [f for _, _, f in soak.samples]
    plot(soak, warm_up, args.png)
    summary = {"minutes": args.minutes, "faults": len(soak.faults),
               "fault_kinds": {k: sum(1 for _, f in soak.faults if f == k) for k in FAULTS},
               "messages_received": soak.received, "rss_after_warm_up_mb": round(base, 1),
               "rss_at_end_mb": round(final, 1), "rss_growth": round(grew, 4),
               "fds_min": min(fds), "fds_max": max(fds), "png": str(args.png)}
    print(json.dumps(summary, indent=2))
    args.png.with_suffix(".json").write_text(json.dumps(
        {**summary, "samples": soak.samples, "faults_at": soak.faults}, indent=1))
    if grew > GROWTH_LIMIT:
        print(f"FAIL: RSS grew {grew:.1%} after the warm-up (limit {GROWTH_LIMIT:.0%})")
        sys.exit(1)


if __name__ == "__main__":
    main()
