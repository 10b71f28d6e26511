"""Full disk and broker outage, again and again: does every business event get through?

    sudo .venv/bin/python -m bench.disk_outage --minutes 10

The buffer lives on a small tmpfs of its own (mounting one needs root). Peers in
their own processes: the simulated line (every tag also telemetry at 10 Hz),
Mosquitto, a subscriber. Each cycle: the line runs normally; the broker stops;
another file fills the disk to the last block; the line runs on a full disk; half
of the space comes back, then the broker, then the rest of the space.

Reported: events derived (the agent's own count of what it committed), delivered
(unique ids at the subscriber), dropped by class (the buffer's count), the alarms
seen on /status, and the good parts per asset against the simulator's counters.
Exit status 1 if a single business event or hold was lost or dropped, or a count
differs from the simulator's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .endurance import _wait_port, start_mosquitto
from .ports import free_port
from .subscriber import subscribe_until

REPO = Path(__file__).resolve().parents[1]
DISK_BYTES = 96 * 1024 * 1024
MICRO_STOP = 1.5


def _short(event_type: str) -> str:
    return event_type.removeprefix("floorlink.").removesuffix(".v1")


@dataclass
class Run:
    workdir: Path
    minutes: float
    seed: int
    opcua: int = field(default_factory=free_port)
    modbus: int = field(default_factory=free_port)
    mqtt: int = field(default_factory=free_port)
    status: int = field(default_factory=free_port)
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> event
    alarms: Counter[str] = field(default_factory=Counter)  # key -> times seen raised
    cycles: list[dict[str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    broker: subprocess.Popen[bytes] | None = None

    @property
    def disk(self) -> Path:
        return self.workdir / "disk"

    def start_broker(self) -> None:
        self.broker = start_mosquitto(self.workdir, self.mqtt, persistent=True)

    def stop_broker(self) -> None:
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()  # SIGTERM: Mosquitto saves the subscriber's session
            self.broker.wait(15)
        self.broker = None

    def subscribe(self, stop: threading.Event) -> None:
        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with contextlib.suppress(ValueError):
                body = json.loads(message.payload)
                if "specversion" in body:
                    with self.lock:
                        self.delivered.setdefault(body["id"], body)

        subscribe_until(self.mqtt, "disk-outage-subscriber", on_message, stop, max_delay=1)

    def status_json(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status}/status",
                                    timeout=5) as answer:
            return dict(json.load(answer))

    def watch_alarms(self, stop: threading.Event) -> None:
        raised: set[str] = set()
        while not stop.wait(1.0):
            try:
                now = {a["key"] for a in self.status_json()["alarms"]}
            except (OSError, ValueError, KeyError):
                continue
            for key in now - raised:
                self.alarms[key] += 1
            raised = now

    def fill_disk(self) -> Path:
        filler = self.disk / "filler"
        with contextlib.suppress(OSError), filler.open("ab") as out:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        return filler

    def cycle(self, started: float, end: float) -> None:
        at = time.monotonic() - started
        time.sleep(15)  # the line runs, the broker takes everything
        self.stop_broker()
        time.sleep(5)  # an outage: the backlog grows on the small disk
        filler = self.fill_disk()
        full_at = time.monotonic()
        time.sleep(10)  # the line runs on, on a full disk
        with contextlib.suppress(OSError):
            os.truncate(filler, filler.stat().st_size // 2)  # half the space comes back
        time.sleep(3)
        self.start_broker()
        time.sleep(10)
        with contextlib.suppress(OSError):
            filler.unlink()  # and the rest
        self.cycles.append({"at_s": round(at, 1), "full_s": round(time.monotonic() - full_at, 1)})
        print(f"{(time.monotonic() - started) / 60:5.1f} min  cycle {len(self.cycles)} done",
              flush=True)

    def run(self) -> dict[str, Any]:
        sys.path.insert(0, str(REPO / "tests"))
        from conftest import LINE_CONFIG  # the line the end-to-end tests use
        from truth import summarize

        self.disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                        str(self.disk)], check=True)
        stop = threading.Event()
        line: subprocess.Popen[bytes] | None = None
        agent: subprocess.Popen[bytes] | None = None
        try:
            self.start_broker()
            seconds = self.minutes * 60
            truth_file = self.workdir / "truth.jsonl"
            line_log = (self.workdir / "line.log").open("ab")
            line = subprocess.Popen(
                [sys.executable, "-m", "agent", "simulate", "--seed", str(self.seed),
                 "--opcua-port", str(self.opcua), "--modbus-port", str(self.modbus),
                 "--truth", str(truth_file), "--duration", str(seconds),
                 "--wait-for-signal"], cwd=REPO, stdout=line_log, stderr=line_log)
            _wait_port(self.opcua)
            _wait_port(self.modbus)
            config = self.workdir / "config.yaml"
            config.write_text(LINE_CONFIG.format(
                opcua_port=self.opcua, modbus_port=self.modbus, mqtt_port=self.mqtt,
                status_port=self.status, micro_stop=f"{MICRO_STOP}s",
                buffer=self.disk / "buffer.db").replace("{name: ", "{publish: every 100ms, "
                                                                   "name: "))
            threads = [threading.Thread(target=self.subscribe, args=(stop,), daemon=True),
                       threading.Thread(target=self.watch_alarms, args=(stop,), daemon=True)]
            for thread in threads:
                thread.start()
            agent_log = (self.workdir / "agent.log").open("ab")
            agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config),
                                      "--log-level", "warning"], cwd=REPO, stdout=agent_log,
                                     stderr=agent_log)
            deadline = time.monotonic() + 60
            while {e["subject"] for e in list(self.delivered.values())} < {"press-1",
                                                                           "press-2"}:
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise RuntimeError(f"the agent did not start; see {self.workdir}")
                time.sleep(0.2)
            line.send_signal(signal.SIGUSR1)  # baselines taken: the line may begin
            started = time.monotonic()
            end = started + seconds
            while time.monotonic() + 45 < end:
                self.cycle(started, end)
                if agent.poll() is not None:
                    raise RuntimeError(f"the agent died; see {self.workdir}")
            while line.poll() is None and time.monotonic() < end + 30:
                time.sleep(1)
            return self.settle(summarize([json.loads(r) for r in truth_file.read_text()
                                          .splitlines() if r], MICRO_STOP))
        finally:
            for process in (agent, line):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(30)
            stop.set()
            self.stop_broker()
            subprocess.run(["umount", "-l", str(self.disk)], check=False)

    def settle(self, truth: dict[str, Any]) -> dict[str, Any]:
        """Once the backlog is delivered, compare what was derived, delivered, dropped."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = self.status_json()
            backlog = sum(sum(lanes.values()) for lanes in
                          (status["buffer"] or {}).get("backlog", {}).values())
            if backlog == 0:
                break
            time.sleep(2)
        time.sleep(3)
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.status}/metrics",
                                      timeout=5).read().decode()
        derived: Counter[str] = Counter()
        for row in text.splitlines():
            if row.startswith("floorlink_events_total{"):
                kind = row.split('type="', 1)[1].split('"', 1)[0]
                derived[_short(kind)] += int(float(row.rsplit(" ", 1)[1]))
        with self.lock:
            events = list(self.delivered.values())
        delivered = Counter(_short(e["type"]) for e in events)
        drops: Counter[str] = Counter()
        for by_class in (status["buffer"] or {}).get("drops", {}).values():
            drops.update(by_class)
        business = [k for k in derived if k != "telemetry"]
        lost = {k: derived[k] - delivered[k] for k in business if derived[k] != delivered[k]}
        good = {asset: sum(e["data"]["good"] for e in events if e["subject"] == asset
                           and _short(e["type"]) == "production.confirmed")
                for asset in truth}
        return {"minutes": self.minutes, "cycles": len(self.cycles),
                "derived": dict(derived), "delivered": dict(delivered),
                "business_derived": sum(derived[k] for k in business),
                "business_delivered": sum(delivered[k] for k in business),
                "business_lost": lost, "dropped_by_class": dict(drops),
                "alarms_raised": dict(self.alarms), "backlog_left": backlog,
                "good_delivered": good,
                "good_simulator": {a: t.good for a, t in truth.items()},
                "downtimes_delivered": {a: sum(1 for e in events if e["subject"] == a and
                                               _short(e["type"]) == "downtime.ended")
                                        for a in truth},
                "downtimes_simulator": {a: t.downtimes for a, t in truth.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.disk_outage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, default=Path("docs/disk_outage.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("this benchmark mounts a small tmpfs for the buffer: run it as root")
    with tempfile.TemporaryDirectory(prefix="floorlink-disk-") as tmp:
        summary = Run(Path(tmp), args.minutes, args.seed).run()
    print(json.dumps(summary, indent=2))
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    failures = []
    if summary["business_lost"]:
        failures.append(f"business events derived but not delivered: {summary['business_lost']}")
    if summary["dropped_by_class"].get("business") or summary["dropped_by_class"].get("hold"):
        failures.append(f"business events dropped: {summary['dropped_by_class']}")
    if summary["good_delivered"] != summary["good_simulator"]:
        failures.append("good parts differ from the simulator's counters")
    if summary["backlog_left"]:
        failures.append(f"{summary['backlog_left']} events never delivered")
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
