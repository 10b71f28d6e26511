"""The status endpoint of a running agent, against the simulated line and a real broker:
the technician's page (also in a real headless Chromium), JSON, metrics and probes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LINE_CONFIG, REPO, AgentProcess, Broker, Collector, Line, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

ARTIFACTS = Path(os.environ.get("FLOORLINK_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


class Running:
    def __init__(self, workdir: Path) -> None:
        (workdir / "broker").mkdir()
        self.broker = Broker(workdir / "broker")
        self.broker.start()
        self.collector = Collector(self.broker.port)
        self.collector.start()
        self.line = Line(workdir, seed=11, duration=120)
        self.port = free_port()
        self.agent = AgentProcess(workdir, LINE_CONFIG.format(
            opcua_port=self.line.opcua_port, modbus_port=self.line.modbus_port,
            mqtt_port=self.broker.port, status_port=self.port, micro_stop="1.5s",
            buffer=workdir / "buffer.db"))
        self.agent.start()
        self.line.go()
        wait_until(lambda: len(self.collector.events()) >= 5, 45,
                   f"events at the broker\n{self.agent.log()}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> None:
        self.agent.stop()
        self.line.stop()
        self.collector.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    rig = Running(tmp_path_factory.mktemp("status"))
    yield rig
    rig.stop()


def test_the_page_shows_devices_assets_uplinks_buffer_and_clock(running: Running) -> None:
    status, page = running.get("/")
    assert status == 200
    page = page.replace("<wbr>", "")  # long ids and paths may wrap after a separator
    assert '<meta http-equiv=refresh' in page
    assert 'name=viewport' in page
    # Nothing from elsewhere: the plant network has no internet.
    for outside in ("http://", "https://", "<script", "@import", "<link"):
        assert outside not in page, outside
    for section in ("id=alarms", "id=assets", "id=devices", "id=uplinks", "id=buffer",
                    "id=clock"):
        assert section in page
    text = re.sub(r"<[^>]+>", "", page)  # what the technician reads
    for name in ("press1-plc", "press2-plc", "press-1", "press-2", "broker", "buffer.db",
                 "opcua", "modbus_tcp", "System clock", "OPC UA press1-plc"):
        assert name in text, name
    assert "connected" in page


def test_status_json_has_what_the_page_shows(running: Running) -> None:
    status, body = running.get("/status")
    assert status == 200
    view = json.loads(body)
    assert view["agent"]["ready"] is True
    assert {d["device"] for d in view["devices"]} == {"press1-plc", "press2-plc"}
    assert all(d["last_sample_age_s"] is not None for d in view["devices"])
    uplink = view["uplinks"][0]
    assert {"backlog", "oldest_pending_age_s", "dead_letters_stored", "last_error",
            "connected"} <= uplink.keys()
    assert view["buffer"]["limits"]
    assert "synchronized" in view["clock"]
    # The shift's history comes from the buffer, refreshed every 10 s.
    def timeline() -> list[dict[str, Any]]:
        shift = json.loads(running.get("/status")[1])["shifts"].get("press-1", {})
        return list(shift.get("current", {}).get("timeline", []))
    wait_until(lambda: bool(timeline()), 15, "the shift timeline of press-1")
    assert timeline()[0]["state"] in ("running", "idle", "down", "setup", "planned_stop")
    wait_until(lambda: json.loads(running.get("/status")[1])["clock"]["opcua_servers"]
               ["press1-plc"] is not None, 10, "the OPC UA server's clock offset")
    assert view["events_by_type"]


def test_metrics_cover_samples_events_backlog_latency_and_the_process(running: Running) -> None:
    wait_until(lambda: "floorlink_publish_latency_seconds_count" in running.get("/metrics")[1],
               10, "publish latency")
    status, text = running.get("/metrics")
    assert status == 200
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def values(name: str, **labels: str) -> list[float]:
        return [s.value for s in samples.get(name, [])
                if all(s.labels.get(k) == v for k, v in labels.items())]

    assert values("floorlink_samples_total", device="press1-plc")[0] > 0
    assert values("floorlink_samples_total", device="press2-plc")[0] > 0
    assert sum(values("floorlink_events_total")) >= 5
    assert any(s.labels["type"] == "machine.state_changed"
               for s in samples["floorlink_events_total"])
    assert values("floorlink_uplink_backlog_events", uplink="broker")
    assert values("floorlink_uplink_oldest_pending_age_seconds", uplink="broker")
    assert values("floorlink_publish_latency_seconds_count", uplink="broker")[0] > 0
    assert values("floorlink_uplink_delivered_total", uplink="broker")[0] > 0
    for name in ("floorlink_uplink_dead_lettered_total", "floorlink_uplink_disconnects_total",
                 "floorlink_device_reconnects_total", "floorlink_buffer_file_bytes",
                 "floorlink_buffer_events", "floorlink_buffer_writable"):
        assert name in samples, name
    assert values("floorlink_buffer_commits_total")[0] > 0
    assert values("process_resident_memory_bytes")[0] > 10e6
    assert "process_cpu_seconds_total" in samples
    assert values("floorlink_up")[0] == 1.0


def test_liveness_and_readiness(running: Running) -> None:
    assert running.get("/healthz") == (200, "ok\n")
    status, body = running.get("/readyz")
    assert status == 200
    assert body.splitlines() == ["config_loaded ok", "buffer_open ok", "uplinks_started ok",
                                 "running ok"]


def test_the_page_in_a_real_headless_chromium_at_phone_size(running: Running,
                                                             tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{running.port}/"
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, "--dump-dom", url],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    for text in ("press1-plc", "press-2", "Uplinks", "Buffer", "System clock"):
        assert text in dom, text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page-phone.png"
    shot.unlink(missing_ok=True)
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, "--window-size=412,1400",
                    f"--screenshot={shot}", url], capture_output=True, timeout=60, check=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
