"""`floorlink probe` against the simulated line's real servers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, Line, free_port


def probe(config: Path, device: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "probe", "-c", str(config), device],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_probe_shows_plan_raw_registers_and_every_word_order(tmp_path: Path) -> None:
    line = Line(tmp_path, seed=1, duration=1)  # waits for a signal: the values stay put
    try:
        demo = (REPO / "agent" / "demo" / "demo.yaml").read_text()
        config = tmp_path / "config.yaml"
        config.write_text(demo.replace("127.0.0.1:4840", f"127.0.0.1:{line.opcua_port}")
                          .replace("port: 5020", f"port: {line.modbus_port}"))
        modbus = probe(config, "press2-plc")
        assert modbus.returncode == 0, modbus.stderr
        assert "holding_register 0..27 (28 registers): state, good, scrap" in modbus.stdout
        good = next(row for row in modbus.stdout.splitlines() if row.startswith("good "))
        assert "0000 1388" in good  # the simulator's 5000, raw
        assert "[ABCD* 5000 | CDAB 327680000 | BADC 34835 | DCBA 2282946560]" in good
        assert "'WO-1001'" in modbus.stdout
        opcua = probe(config, "press1-plc")
        assert opcua.returncode == 0, opcua.stderr
        assert "nsu=urn:floorlink:sim;s=Press1.GoodCount     good" in opcua.stdout
    finally:
        line.stop()


def test_probe_of_an_unknown_or_unreachable_device_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"""
site: s
devices:
  - id: gone
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {free_port()}
    timeout: 1s
    tags: [{{name: state, register: 40001}}]
""")
    unknown = probe(config, "nope")
    assert unknown.returncode == 64
    assert "devices are: gone" in unknown.stderr
    unreachable = probe(config, "gone")
    assert unreachable.returncode == 69
    assert "gone: cannot open 127.0.0.1:" in unreachable.stdout
