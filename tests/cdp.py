"""A headless Chromium driven over its DevTools protocol: load a page at a given width,
measure it with JavaScript (DevTools evaluates outside the page's CSP, which forbids
inline scripts), take a screenshot. No selenium, no chromedriver: a WebSocket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from conftest import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


class Tab:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command; events that arrive meanwhile are returned by `wait_for`."""
        ident = next(self._ids)
        await self.socket.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = json.loads((await self.socket.receive(timeout=30)).data)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def wait_for(self, event: str) -> None:
        while True:
            message = json.loads((await self.socket.receive(timeout=30)).data)
            if message.get("method") == event:
                return

    async def open(self, url: str, width: int, height: int = 900) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=width < 600)
        await self.call("Page.enable")
        await self.call("Page.navigate", url=url)
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True)
        return result["result"].get("value")

    async def screenshot(self) -> bytes:
        """The whole page as PNG."""
        shot = await self.call("Page.captureScreenshot", format="png",
                               captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Tab]:
    port = free_port()
    # Chromium's helper processes can still write to the profile for a moment after
    # the browser exits: a leftover file must not fail the test that used it.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = await asyncio.to_thread(
            subprocess.Popen, [CHROMIUM, *FLAGS, f"--remote-debugging-port={port}",
                               f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as http:
                targets: list[dict[str, Any]] = []
                for _ in range(100):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                            targets = [t for t in await answer.json() if t["type"] == "page"]
                    if targets:
                        break
                    await asyncio.sleep(0.1)
                assert targets, "Chromium's DevTools never answered"
                async with http.ws_connect(targets[0]["webSocketDebuggerUrl"],
                                           max_msg_size=64 << 20) as socket:
                    yield Tab(socket)
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 20)
