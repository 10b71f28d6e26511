"""SIGHUP against a running agent on the simulated line: a bad file changes nothing and
says why; a good one restarts exactly the devices and uplinks that changed."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

from conftest import LINE_CONFIG, AgentProcess, Broker, Collector, Line, free_port, wait_until


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
        return dict(json.load(answer))


def device(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in view["devices"] if d["device"] == name)


def test_sighup_reload(tmp_path: Path, broker: Broker, collector: Collector) -> None:
    line = Line(tmp_path, seed=5, duration=120)
    port = free_port()
    values = dict(opcua_port=line.opcua_port, modbus_port=line.modbus_port,
                  mqtt_port=broker.port, status_port=port, micro_stop="1.5s",
                  buffer=tmp_path / "buffer.db")
    original = LINE_CONFIG.format(**values)
    agent = AgentProcess(tmp_path, original)
    agent.start()
    line.go()
    try:
        wait_until(lambda: len(collector.events()) >= 3, 45, f"events\n{agent.log()}")
        wait_until(lambda: all(d["samples"] > 5 for d in status(port)["devices"]), 20,
                   "samples from both devices")
        assert agent.proc is not None

        def reload(text: str) -> None:
            agent.config.write_text(text)
            before = status(port)["agent"]["config_loaded_at"]
            error_before = status(port)["agent"]["config_error"]
            assert agent.proc is not None
            agent.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: status(port)["agent"]["config_loaded_at"] != before
                       or status(port)["agent"]["config_error"] not in (None, error_before),
                       15, f"the reload to finish\n{agent.log()}")

        # 1. A broken file: the old configuration runs on, and the page says why.
        reload(original.replace("poll_interval: 100ms", "poll_interval: soon"))
        view = status(port)
        assert "poll_interval" in view["agent"]["config_error"]
        assert "previous config" in view["agent"]["config_error"]
        assert any(a["key"] == "config.reload" for a in view["alarms"])
        assert all(d["state"] == "up" for d in view["devices"])
        assert agent.proc.poll() is None

        # 2. One device changed: only it restarts (its counters start again).
        view = status(port)
        press1, press2 = device(view, "press1-plc"), device(view, "press2-plc")
        delivered = view["uplinks"][0]["delivered"]
        reload(original.replace("poll_interval: 100ms", "poll_interval: 150ms"))
        view = status(port)
        assert view["agent"]["config_error"] is None
        assert not any(a["key"] == "config.reload" for a in view["alarms"])
        assert device(view, "press1-plc")["since"] == press1["since"]
        assert device(view, "press1-plc")["samples"] >= press1["samples"]
        assert device(view, "press2-plc")["since"] != press2["since"]
        assert view["uplinks"][0]["delivered"] >= delivered  # the uplink kept going
        wait_until(lambda: device(status(port), "press2-plc")["state"] == "up", 15,
                   "the restarted device to connect")
        assert "restarting devices press2-plc" in agent.log()

        # 3. The uplink changed: it restarts, the devices do not.
        view = status(port)
        press2 = device(view, "press2-plc")
        uplink_since = view["uplinks"][0]["since"]
        changed_uplink = original.replace("poll_interval: 100ms", "poll_interval: 150ms")
        changed_uplink = changed_uplink.replace("max_inflight: 20", "max_inflight: 10")
        reload(changed_uplink)
        view = status(port)
        assert device(view, "press2-plc")["since"] == press2["since"]
        assert view["uplinks"][0]["since"] != uplink_since
        assert "restarting uplinks broker" in agent.log()
        count = len(collector.events())
        wait_until(lambda: len(collector.events()) > count + 2, 30,
                   "events through the restarted uplink")

        # 4. Assets changed: applied only on restart, and the page says so.
        reload(changed_uplink.replace("Die jam", "Die jammed"))
        view = status(port)
        assert view["agent"]["restart_needed"] == ["assets and the tags they use"]
        assert agent.proc.poll() is None
    finally:
        code = agent.stop()
        line.stop()
    assert code == 0
    log = agent.log()
    assert "Traceback" not in log
