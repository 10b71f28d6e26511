"""Serve simulated presses over real protocols on loopback.

Press 1 is an OPC UA server (asyncua), namespace `urn:floorlink:sim`;
press 2 is a Modbus TCP server (pymodbus), unit 1, holding registers:

    0 state | 1-2 good (uint32) | 3-4 scrap (uint32) | 5 fault code
    6 quality hold (bit 0) | 7 hold reason code | 10-17 lot | 20-27 work order (strings)
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .model import HOLD_REASONS, PressModel, PressSnapshot

log = logging.getLogger("floorlink.simulator")
NAMESPACE = "urn:floorlink:sim"
STEP = 0.05


def _string_registers(text: str, count: int) -> list[int]:
    raw = text.encode("latin-1")[: count * 2].ljust(count * 2, b"\x00")
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


class OpcUaPress:
    def __init__(self, model: PressModel, port: int, host: str = "127.0.0.1") -> None:
        self.model, self.port, self.host = model, port, host
        self._server: Any = None
        self._vars: dict[str, Any] = {}
        self._last: dict[str, object] = {}

    async def start(self) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/floorlink/sim")
        server.set_server_name("floorlink simulated press line")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        press = await server.nodes.objects.add_object(ua.NodeId("Press1", idx), "Press1")
        layout = (("State", ua.VariantType.Int32), ("GoodCount", ua.VariantType.UInt32),
                  ("ScrapCount", ua.VariantType.UInt32), ("FaultCode", ua.VariantType.Int32),
                  ("QualityHold", ua.VariantType.Boolean),
                  ("HoldReason", ua.VariantType.String),
                  ("Lot", ua.VariantType.String), ("WorkOrder", ua.VariantType.String))
        for name, vtype in layout:
            initial = self._values(self.model.snap)[name]
            self._vars[name] = (await press.add_variable(
                ua.NodeId(f"Press1.{name}", idx), name, ua.Variant(initial, vtype)), vtype)
        await server.start()
        self._server = server
        await self.publish(self.model.snap)

    @staticmethod
    def _values(snap: PressSnapshot) -> dict[str, object]:
        # Counters first: a work-order change is written after the parts made before it.
        return {"GoodCount": snap.good, "ScrapCount": snap.scrap, "FaultCode": snap.fault,
                "HoldReason": HOLD_REASONS.get(snap.hold_reason, ""), "Lot": snap.lot,
                "WorkOrder": snap.work_order, "State": snap.state, "QualityHold": snap.hold}

    async def publish(self, snap: PressSnapshot) -> None:
        from asyncua import ua

        stamp = datetime.now(UTC)
        for name, value in self._values(snap).items():
            if self._last.get(name) == value:
                continue
            node, vtype = self._vars[name]
            await node.write_value(ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=stamp,
                                                ServerTimestamp=stamp))
            self._last[name] = value

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()


class ModbusPress:
    def __init__(self, model: PressModel, port: int, host: str = "127.0.0.1") -> None:
        self.model, self.port, self.host = model, port, host
        self._server: Any = None

    async def start(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        device = SimDevice(id=1, simdata=[SimData(address=0, count=64, values=0,
                                                  datatype=DataType.REGISTERS)])
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        await self.publish(self.model.snap)

    async def publish(self, snap: PressSnapshot) -> None:
        words = [snap.state, snap.good >> 16, snap.good & 0xFFFF, snap.scrap >> 16,
                 snap.scrap & 0xFFFF, snap.fault, int(snap.hold), snap.hold_reason]
        words += [0, 0, *_string_registers(snap.lot, 8), 0, 0]
        words += _string_registers(snap.work_order, 8)
        # One write of the whole block: a reader never sees half an update.
        await self._server.async_setValues(1, 16, 0, words)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()


class TruthLog:
    """Ground truth, one JSON object per line, written by the simulator alone."""

    def __init__(self, path: Path | None) -> None:
        self._file = path.open("a", encoding="utf-8") if path else None

    def write(self, asset: str, record: dict[str, object]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"t": time.time(), "asset": asset, **record}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def run_line(seed: int = 7, opcua_port: int = 4840, modbus_port: int = 5020,
                   truth: Path | None = None, duration: float | None = None,
                   wait_for_signal: bool = False,
                   started: asyncio.Event | None = None) -> None:
    """Serve both presses until cancelled. With `duration`, freeze after that many seconds."""
    presses = [PressModel("press-1", seed, cycle_time=0.3, first_order=2001),
               PressModel("press-2", seed + 1, cycle_time=0.35, first_counter=5000)]
    servers: list[OpcUaPress | ModbusPress] = [OpcUaPress(presses[0], opcua_port),
                                               ModbusPress(presses[1], modbus_port)]
    log_ = TruthLog(truth)
    try:
        for server in servers:
            await server.start()
        go = asyncio.Event()
        if wait_for_signal:
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
            log.info("simulator ready; waiting for SIGUSR1 to start the scenario")
        else:
            go.set()
        if started is not None:
            started.set()
        print(f"simulator listening: OPC UA opc.tcp://127.0.0.1:{opcua_port}/floorlink/sim, "
              f"Modbus TCP 127.0.0.1:{modbus_port}", flush=True)
        await go.wait()
        begin = time.time()
        for press in presses:
            press.begin(begin)
            log_.write(press.asset, {"kind": "start", "good": press.snap.good,
                                     "scrap": press.snap.scrap,
                                     "work_order": press.snap.work_order, "state": "idle"})
        while True:
            now = time.time()
            ending = duration is not None and now - begin >= duration
            for press, server in zip(presses, servers, strict=True):
                if press.frozen:
                    continue
                for record in press.advance(now):
                    log_.write(press.asset, record)
                if ending:
                    before, held = press.snap.state, press.snap.hold
                    press.freeze()
                    if held:
                        log_.write(press.asset, {"kind": "hold", "active": False,
                                                 "lot": press.snap.lot, "reason": None,
                                                 "work_order": press.snap.work_order})
                    if before != press.snap.state:
                        log_.write(press.asset, {"kind": "state", "from": _name(before),
                                                 "to": "idle", "code": 2, "fault": None})
                    log_.write(press.asset, {"kind": "end", "good": press.snap.good,
                                             "scrap": press.snap.scrap,
                                             "work_order": press.snap.work_order})
                await server.publish(press.snap)
            await asyncio.sleep(STEP)
    finally:
        for server in servers:
            await server.stop()
        log_.close()


def _name(code: int) -> str:
    from .model import STATE_NAMES

    return STATE_NAMES[code]
