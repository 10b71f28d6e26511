"""One Modbus line: a connection, a lock, and the silence kept between frames.

Several units on one RS-485 line (or behind one serial-to-Ethernet converter) take turns
on it. A unit that stops answering costs only its own time slot: its request times out,
the line stays open, and the next unit's request goes out. The connection is closed when
its last device lets go of it, or when the transport itself fails.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from agent.errors import DeviceUnreachable, DriverError
from agent.settings.models import (
    ModbusDevice,
    ModbusRtuDevice,
    ModbusRtuOverTcpDevice,
    ModbusTable,
)

log = logging.getLogger("floorlink.modbus")

_READERS = {"coil": "read_coils", "discrete_input": "read_discrete_inputs",
            "holding_register": "read_holding_registers",
            "input_register": "read_input_registers"}


def _honour_cancellation() -> None:
    """Python 3.11's asyncio.wait_for, which pymodbus awaits inside, returns the result and
    drops a cancellation that lands just as the response arrives (fixed in 3.12). A fast
    poll loop hits that race often, and a stop would then never happen: re-raise it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class UnitSilent(DriverError):
    """The unit did not answer in time; the line itself is fine."""


class ModbusBus:
    _sent: bytes = b""
    _heard: bytes = b""

    def __init__(self, name: str, device: ModbusDevice) -> None:
        self.name = name
        # The first device on the line defines it: the config check makes the serial
        # settings agree; its request timeout is the line's.
        self.settings = device
        self.frame_gap = float(getattr(device, "frame_gap", 0.0))
        self.lock = asyncio.Lock()
        self._client: Any = None
        self._users = 0
        self._last_frame_end = 0.0

    def acquire(self) -> None:
        self._users += 1

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            await self._disconnect()

    async def open_line(self) -> None:
        """Open the line if it is not open; raise DeviceUnreachable if it cannot be."""
        async with self.lock:
            await self._connect()

    async def read(self, unit: int, table: ModbusTable, start: int, count: int) -> Any:
        """One request on the line; returns pymodbus's response (which may be an exception
        response). Raises UnitSilent on no answer, DeviceUnreachable if the line is down."""
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        loop = asyncio.get_running_loop()
        async with self.lock:
            await self._connect()
            wait = self._last_frame_end + self.frame_gap - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            reader = getattr(self._client, _READERS[table])
            try:
                # pymodbus keeps its own timeout; ours also bounds a line that hangs. Not
                # wait_for: it runs the read as a task of its own and, when we are
                # cancelled, waits for that task to agree, which a pymodbus read may not.
                async with asyncio.timeout(self.settings.timeout * 2):
                    response = await reader(start, count=count, device_id=unit)
                _honour_cancellation()
                return response
            except ModbusIOException as exc:
                lie = _mismatch(str(exc)) or self._heard_lie()
                if self._client is not None and not self._client.connected:
                    await self._disconnect()
                    cause = f"unit {unit} {lie}" if lie else str(exc)
                    raise DeviceUnreachable(f"{self.name}: connection lost ({cause})") from exc
                if lie is not None:
                    raise UnitSilent(f"unit {unit} on {self.name} {lie}") from exc
                raise UnitSilent(f"unit {unit} on {self.name} did not answer within "
                                 f"{self.settings.timeout:g}s") from exc
            except (ConnectionException, OSError, TimeoutError) as exc:
                await self._disconnect()
                raise DeviceUnreachable(f"{self.name}: {exc or type(exc).__name__}") from exc
            finally:
                self._last_frame_end = loop.time()

    async def _connect(self) -> None:
        if self._client is not None and self._client.connected:
            return
        await self._disconnect()
        if isinstance(self.settings, ModbusRtuDevice):
            # pymodbus reports a refused port as a bare False; opening it once ourselves
            # yields the operating system's reason, which tells the engineer what to fix.
            try:
                await asyncio.to_thread(_try_serial_port, self.settings)
            except Exception as exc:
                raise DeviceUnreachable(
                    f"cannot open {self.name}: {exc}{_serial_hint(exc)}") from exc
        client = self._make_client()
        try:
            opened = await client.connect()
        except Exception as exc:  # pyserial and termios raise their own types: translate all
            client.close()
            raise DeviceUnreachable(f"cannot open {self.name}: {exc}{_serial_hint(exc)}") from exc
        if not opened:
            client.close()
            raise DeviceUnreachable(f"cannot open {self.name}")
        self._client = client

    def _make_client(self) -> Any:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        device = self.settings
        # retries=0, reconnect_delay=0: retrying and reconnecting are the runner's job.
        common: dict[str, Any] = {"timeout": device.timeout, "retries": 0, "reconnect_delay": 0,
                                  "name": self.name, "trace_packet": self._trace}
        if isinstance(device, ModbusRtuDevice):
            return AsyncModbusSerialClient(
                device.port, framer=FramerType.RTU, baudrate=device.baudrate,
                parity=device.parity, bytesize=device.bytesize, stopbits=device.stopbits,
                **common)
        if isinstance(device, ModbusRtuOverTcpDevice):
            return AsyncModbusTcpClient(device.host, port=device.port, framer=FramerType.RTU,
                                        **common)
        return AsyncModbusTcpClient(device.host, port=device.port, **common)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        """pymodbus drops an answer that is not to our request and lets the request time
        out: keep the last request and what came back, to say why."""
        if sending:
            self._sent, self._heard = data, b""
        elif len(self._heard) < HEARD_LIMIT:
            self._heard += data[:HEARD_LIMIT - len(self._heard)]
        return data

    def _heard_lie(self) -> str | None:
        rtu = isinstance(self.settings, ModbusRtuDevice | ModbusRtuOverTcpDevice)
        return heard_lie(self._sent, self._heard, rtu)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class BusRegistry:
    """Hands out one ModbusBus per line; a Modbus TCP device gets a line of its own."""

    def __init__(self) -> None:
        self._buses: dict[str, ModbusBus] = {}

    def bus_for(self, device: ModbusDevice) -> ModbusBus:
        from agent.settings.references import bus_key

        key = bus_key(device) or f"tcp:{device.id}"
        if key not in self._buses:
            self._buses[key] = ModbusBus(_describe(device), device)
        return self._buses[key]


def _try_serial_port(device: ModbusRtuDevice) -> None:
    import serial

    serial.Serial(device.port, baudrate=device.baudrate, parity=device.parity,
                  bytesize=device.bytesize, stopbits=device.stopbits, timeout=0).close()


def _serial_hint(exc: Exception) -> str:
    text = str(exc)
    if "Invalid argument" in text:
        return " (the port refused these serial settings: check baudrate, parity and stopbits)"
    if "No such file" in text:
        return " (no such port: check the adapter is plugged in, or use /dev/serial/by-id/...)"
    if "Permission denied" in text:
        return " (no access: add the service user to the 'dialout' group)"
    return ""


def _describe(device: ModbusDevice) -> str:
    if isinstance(device, ModbusRtuDevice):
        return f"serial line {device.port}"
    if isinstance(device, ModbusRtuOverTcpDevice):
        return f"RTU-over-TCP {device.host}:{device.port}"
    return f"{device.host}:{device.port}"


_MISMATCH = re.compile(r"request uses (device|transaction) id=(\d+) but received (\d+)")


def _mismatch(text: str) -> str | None:
    """pymodbus's refusal of an answer that is not to our request, in the plant's words."""
    found = _MISMATCH.search(text)
    if found is None:
        return None
    kind, asked, got = found.groups()
    if kind == "device":
        return (f"answered with unit {got}, expected {asked}: check the unit id, or a gateway "
                "that rewrites it")
    return (f"answered with transaction id {got}, expected {asked}: another client or a "
            "gateway is mixing up answers on this connection")


HEARD_LIMIT = 260  # a Modbus frame is at most 260 bytes


def heard_lie(sent: bytes, heard: bytes, rtu: bool) -> str | None:
    """What was wrong with an answer pymodbus did not take, or None if nothing came."""
    if not sent or not heard:
        return None
    if rtu:
        unit_at, function_at, head = 0, 1, 3  # unit, function, byte count; CRC at the end
        trailer = 2
    else:
        unit_at, function_at, head = 6, 7, 9  # MBAP header, then function and byte count
        trailer = 0
        if len(heard) >= 2 and heard[:2] != sent[:2]:
            return (f"answered with transaction id {int.from_bytes(heard[:2], 'big')}, "
                    f"expected {int.from_bytes(sent[:2], 'big')}: another client or a gateway "
                    "is mixing up answers on this connection")
    if len(heard) > unit_at and len(sent) > unit_at and heard[unit_at] != sent[unit_at]:
        return (f"answered with unit {heard[unit_at]}, expected {sent[unit_at]}: check the "
                "unit id, or a gateway that rewrites it")
    if len(heard) >= head and heard[function_at] in (1, 2, 3, 4):
        declared, carried = heard[head - 1], len(heard) - head - trailer
        if declared != carried:
            return (f"answered with a byte count of {declared} for {carried} bytes of data: a "
                    "broken frame (wiring, or a converter dropping bytes)")
    return None
