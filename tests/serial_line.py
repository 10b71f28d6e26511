"""A real serial line for RTU tests: socat pty pairs and a relay between them.

    agent end  <-socat->  tap A  ==relay==  tap B  <-socat->  units end (pymodbus server)

The relay swallows whole frames addressed to units in `silent`, as a dead drop on an
RS-485 line would: no answer at all, and the line stays free for the others.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import serial  # pyserial, which pymodbus uses for RTU


class SerialLine:
    def __init__(self, workdir: Path) -> None:
        self.agent_end = str(workdir / "tty-agent")
        self.units_end = str(workdir / "tty-units")
        tap_a, tap_b = str(workdir / "tty-tap-a"), str(workdir / "tty-tap-b")
        self.silent: set[int] = set()
        self.swallowed = 0
        self._procs = [
            subprocess.Popen(["socat", f"pty,raw,echo=0,link={self.agent_end}",
                              f"pty,raw,echo=0,link={tap_a}"]),
            subprocess.Popen(["socat", f"pty,raw,echo=0,link={tap_b}",
                              f"pty,raw,echo=0,link={self.units_end}"]),
        ]
        deadline = time.monotonic() + 10
        while not all(Path(p).exists() for p in (self.agent_end, self.units_end, tap_a, tap_b)):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty links")
            time.sleep(0.05)
        self._a = serial.Serial(tap_a, timeout=0.005)
        self._b = serial.Serial(tap_b, timeout=0.005)
        self._running = True
        self._threads = [threading.Thread(target=self._relay, args=(self._a, self._b, True)),
                         threading.Thread(target=self._relay, args=(self._b, self._a, False))]
        for thread in self._threads:
            thread.start()

    def _relay(self, source: serial.Serial, target: serial.Serial, requests: bool) -> None:
        while self._running:
            try:
                frame = source.read(512)  # a whole frame arrives together; silence ends it
            except (OSError, serial.SerialException):
                return
            if not frame:
                continue
            if requests and frame[0] in self.silent:
                self.swallowed += 1
                continue
            try:
                target.write(frame)
            except (OSError, serial.SerialException):
                return

    def stop(self) -> None:
        self._running = False
        for thread in self._threads:
            thread.join(2)
        self._a.close()
        self._b.close()
        for proc in self._procs:
            proc.terminate()
            proc.wait(5)
