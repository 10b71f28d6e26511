"""Resident memory of a running agent, against what Python and the dependencies cost alone.

Figures (each a separate `floorlink run` process; the PLCs are servers in processes
of their own; RSS is the highest VmRSS seen over a few seconds after a warm-up):
- idle, one Modbus TCP device with one tag, MQTT uplink: asyncua must not be imported;
- 5,000 tags: 2,500 OPC UA items (changing every second) and 2,500 Modbus registers
  (polled every second), same uplink.
Baselines, in the same run: bare Python, and Python that imports the seven user-fixed
dependencies plus aiohttp. The ratio column is floorlink / baseline (lower is leaner).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .opcua_bench import NS
from .opcua_bench import _serve as _serve_opcua
from .ports import free_port, free_ports
from .probe import rss_mb

REPO = Path(__file__).resolve().parents[1]
TAGS_PER_PROTOCOL = 2500
DEPENDENCIES = ("asyncua", "pymodbus", "paho.mqtt.client", "aiosqlite", "httpx",
                "pydantic_settings", "tenacity", "aiohttp.web")


def _serve_modbus(port: int, ready: Any) -> None:
    async def main() -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        device = SimDevice(id=1, simdata=[SimData(address=0, count=TAGS_PER_PROTOCOL + 10,
                                                  values=7, datatype=DataType.REGISTERS)])
        await ModbusTcpServer(device, address=("127.0.0.1", port)).serve_forever(
            background=True)
        ready.set()
        await asyncio.Event().wait()

    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(main())


def _config(workdir: Path, modbus_port: int, opcua_port: int | None, tags: int) -> Path:
    modbus_tags = "\n".join(f"      - {{name: r{n}, register: {40001 + n}}}" for n in range(tags))
    text = f"""
site: bench
agent: {{id: footprint}}
devices:
  - id: press-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {modbus_port}
    poll_interval: 1s
    tags:
{modbus_tags}
"""
    if opcua_port is not None:
        items = "\n".join(f'      - {{name: v{n}, node: "nsu={NS};s=v{n}"}}'
                          for n in range(tags))
        text += f"""  - id: cell-plc
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:{opcua_port}/bench
    publishing_interval: 1s
    tags:
{items}
"""
    text += f"""assets:
  - {{id: press, state: {{tag: press-plc.r0, map: {{7: running}}}}}}
buffer: {{path: {workdir / 'buffer.db'}}}
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {free_port()}}}
status: {{port: {free_port()}}}
"""
    path = workdir / f"config-{tags}-{'both' if opcua_port else 'modbus'}.yaml"
    path.write_text(text)
    return path


def _peak_rss(command: list[str], warm_up: float, window: float,
              env: dict[str, str] | None = None) -> float:
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env)
    try:
        time.sleep(warm_up)
        if process.poll() is not None:
            raise RuntimeError(process.communicate()[0].decode()[-2000:])
        peak, deadline = 0.0, time.monotonic() + window
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(process.pid))
            time.sleep(0.2)
        return peak
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _python_rss(code: str) -> float:
    probe = (f"{code}\nimport time; time.sleep(0.5)\n"
             "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    return int(out.split()[1]) / 1024


def _imports_of_idle_agent(config: Path) -> bool:
    """Does building the agent for this config import asyncua? (It must not.)"""
    code = ("import sys, asyncio\nfrom pathlib import Path\n"
            "from agent.settings import load_config\nfrom agent.app import Agent\n"
            f"Agent(load_config(Path({str(config)!r})))\n"
            "print('asyncua' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    return out.strip() == "True"


async def run(seconds: float) -> list[dict[str, Any]]:
    warm_up, window = max(8.0, seconds * 2), max(3.0, seconds)
    opcua_port, modbus_port = free_ports(2)
    context = multiprocessing.get_context("spawn")
    opcua_ready, modbus_ready = context.Event(), context.Event()
    servers = [context.Process(target=_serve_opcua, daemon=True,
                               args=(opcua_port, opcua_ready, TAGS_PER_PROTOCOL, 1.0)),
               context.Process(target=_serve_modbus, args=(modbus_port, modbus_ready),
                               daemon=True)]
    for server in servers:
        server.start()
    rows: list[dict[str, Any]] = []
    try:
        if not (opcua_ready.wait(180) and modbus_ready.wait(60)):
            raise RuntimeError("the footprint servers did not start")
        bare = _python_rss("pass")
        deps = _python_rss("\n".join(f"import {name}" for name in DEPENDENCIES))
        with tempfile.TemporaryDirectory(prefix="floorlink-footprint-") as tmp:
            workdir = Path(tmp)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            command = [sys.executable, "-m", "agent", "run", "--log-level", "warning", "-c"]
            idle = _config(workdir, modbus_port, None, 1)
            asyncua_loaded = _imports_of_idle_agent(idle)
            idle_rss = _peak_rss([*command, str(idle)], warm_up, window, env)
            (workdir / "buffer.db").unlink(missing_ok=True)
            full = _config(workdir, modbus_port, opcua_port, TAGS_PER_PROTOCOL)
            full_rss = _peak_rss([*command, str(full)], warm_up * 2, window, env)
        rows.append({"figure": "RSS MB, idle, 1 Modbus device", "floorlink": idle_rss,
                     "ceiling": deps, "ratio": idle_rss / deps,
                     "note": f"target <50; baseline: python + 7 deps + aiohttp imported; "
                             f"bare python {bare:.1f} MB; asyncua imported: "
                             f"{'YES' if asyncua_loaded else 'no'}"})
        rows.append({"figure": "RSS MB, 5,000 tags (OPC UA + Modbus)", "floorlink": full_rss,
                     "ceiling": deps, "ratio": full_rss / deps,
                     "note": "target <120; 2,500 OPC UA items at 1 s + 2,500 registers at 1 s"})
    finally:
        for server in servers:
            server.terminate()
            server.join(10)
    return rows
