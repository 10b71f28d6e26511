"""A full disk, for real: the buffer on a small tmpfs that another file fills up
during a broker outage, while the simulated line keeps faulting and producing.

What must hold: the agent keeps deriving business events while the disk is full
(telemetry makes room, counted and alarmed), makes progress again with whatever
space comes back, and once the broker returns every business event of the line
reaches the subscriber, exactly as the simulator's own record says."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until
from test_end_to_end import MICRO_STOP, assert_events_match
from truth import observed, summarize

# Seed 11 for 22 s, as the end-to-end tests: later, a lot change and a hold release land
# in separate PLC scans, which derivation books as a release and a new hold.
SCENARIO_SECONDS = 22.0
DISK_BYTES = 40 * 1024 * 1024
RESERVE = "8MB"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                              str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small filesystem needs mount rights (root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill_up(disk: Path) -> Path:
    """Another program writes until nothing is left, as a runaway log would."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("ab") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def with_telemetry(config: str) -> str:
    """Every PLC tag also publishes telemetry, so the outage backlog fills the disk."""
    return re.sub(r"(      - \{)(name: \w+, (?:node|register|table))",
                  r"\1publish: every 200ms, \2", config)


def test_a_full_disk_keeps_every_business_event_and_recovers_without_a_restart(
        tmp_path: Path, small_disk: Path, broker: Broker, collector: Collector) -> None:
    line = Line(tmp_path, seed=11, duration=SCENARIO_SECONDS)
    status_port = free_port()
    config = with_telemetry(LINE_CONFIG.format(
        opcua_port=line.opcua_port, modbus_port=line.modbus_port, mqtt_port=broker.port,
        status_port=status_port, micro_stop=f"{MICRO_STOP}s",
        buffer=small_disk / "buffer.db"))
    config = config.replace("buffer: {path:", f"buffer: {{limits: {{reserve: {RESERVE}}}, path:")
    agent = AgentProcess(tmp_path, config)
    agent.start()
    try:
        wait_until(lambda: {e["subject"] for e in collector.events()} >= {"press-1", "press-2"},
                   45, f"first events from both presses\n{agent.log()}")
        assert (small_disk / "buffer.db.reserve").is_file()
        broker.stop()  # an outage: the backlog stays on the small disk
        line.go()
        time.sleep(2)
        filler = fill_up(small_disk)
        wait_until(lambda: "no space to write" in agent.log(), 30,
                   f"the agent to meet the full disk\n{agent.log()[-3000:]}")
        time.sleep(6)  # the line runs on, faulting and producing, on a full disk
        assert not (small_disk / "buffer.db.reserve").exists()  # released for room
        # A little space comes back (less than the backlog of reads waiting to be
        # committed needs in one go); the broker too.
        os.truncate(filler, max(0, filler.stat().st_size - 1024 * 1024))
        broker.start()
        wait_until(lambda: sum(1 for r in line.records() if r["kind"] == "end") == 2,
                   SCENARIO_SECONDS + 30, "the scenario to end")
        truth = summarize(line.records(), MICRO_STOP)

        def settled() -> bool:
            seen = observed(collector.unique_events())
            return all(seen.get(asset, {}).get("good", 0) >= t.good
                       and seen.get(asset, {}).get("downtime.ended", 0) >= t.downtimes
                       for asset, t in truth.items())

        wait_until(settled, 60, f"every business event delivered\n{agent.log()[-3000:]}")
        time.sleep(3)  # anything doubled would arrive in this time
        os.truncate(filler, max(0, filler.stat().st_size - 20 * 1024 * 1024))
        wait_until(lambda: (small_disk / "buffer.db.reserve").is_file(), 15,
                   "the reserve to be taken again once space returned")
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5) as a:
            status = json.load(a)
        dropped = [a for a in status["alarms"] if a["key"] == "buffer.dropped"]
    finally:
        log = agent.log()
        agent.stop()
        line.stop()
    events = collector.unique_events()
    assert_events_match(line.records(), events)
    assert sum(t.downtimes for t in truth.values()) > 0
    # Business events: every one, in order, no sequence gap. Telemetry made the room.
    streams: dict[tuple[str, str], list[int]] = {}
    for event in events:
        if event["lane"] != "telemetry":
            streams.setdefault((event["subject"], event["lane"]), []).append(event["sequence"])
    for stream, sequences in streams.items():
        assert sequences == list(range(1, len(sequences) + 1)), stream
    assert dropped, status["alarms"]
    assert "telemetry" in dropped[0]["message"]
    assert "the disk was full" in dropped[0]["message"]
    assert "no space to write" in log
    assert "dropped the oldest telemetry" in log or "without its" in log, log[-3000:]
    assert "Traceback" not in log
