"""The HTTPS uplink against a real HTTP server on loopback (aiohttp), through the
real forwarder and buffer: each kind of answer, batching and splitting, retries,
signatures checked by an independent verifier, TLS, and independence from a
dead MQTT uplink."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import free_port
from pki import TestCa
from test_buffer_retention import big

from agent.events import Lane
from agent.settings import load_config_text
from agent.uplinks.forwarder import Forwarder
from agent.uplinks.https import HttpsPoster
from agent.uplinks.mqtt import MqttPublisher
from buffer import Outbox

SECRET = "whsec_" + base64.b64encode(b"floorlink-test-key-0123456789").decode()


def verify_standard_webhook(secret: str, headers: Any, body: bytes,
                            tolerance: float = 300) -> bool:
    """Written from the Standard Webhooks spec, sharing no code with floorlink."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = base64.b64encode(hmac.digest(key, f"{msg_id}.{stamp}.".encode() + body,
                                            "sha256")).decode()
    offered = [part.split(",", 1)[1] for part in headers["webhook-signature"].split(" ")
               if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


@dataclass
class Received:
    headers: Any
    body: bytes
    at: float


@dataclass
class Middleware:
    """A webhook receiver whose answers the test scripts."""

    port: int = field(default_factory=free_port)
    requests: list[Received] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[list[dict[str, Any]], Received], Awaitable[web.Response]] | None = None
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        got = Received(request.headers, await request.read(), time.monotonic())
        self.requests.append(got)
        parsed = json.loads(got.body)
        events = parsed if isinstance(parsed, list) else [parsed]
        response = (await self.answer(events, got) if self.answer
                    else web.Response(status=204))
        if 200 <= response.status < 300:
            self.accepted.extend(events)
        return response

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_post("/events", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=ssl_context).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def middleware() -> AsyncIterator[Middleware]:
    server = Middleware()
    await server.start()
    yield server
    await server.stop()


def uplink_yaml(port: int, extra: str = "", scheme: str = "http") -> str:
    return f"""
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - id: mw
    type: https
    url: {scheme}://127.0.0.1:{port}/events
    signing_secret: ${{env:TEST_WEBHOOK_SECRET}}
    {extra}
"""


class Rig:
    def __init__(self, tmp_path: Path, text: str) -> None:
        self.tmp_path = tmp_path
        self.config = load_config_text(text, "config.yaml", tmp_path)
        self.tasks: list[asyncio.Task[None]] = []
        self.uplinks: list[Any] = []

    async def start(self) -> Outbox:
        from agent.app import _make_uplink, _window

        self.outbox = await Outbox.open(self.tmp_path / "b.db", [u.id for u in self.config.uplinks])
        for settings in self.config.uplinks:
            uplink = _make_uplink(settings, self.config, self.outbox)
            await uplink.start()
            self.uplinks.append(uplink)
            forwarder = Forwarder(uplink, self.outbox, _window(settings), settings.max_rate,
                                  settings.events)
            self.tasks.append(asyncio.create_task(forwarder.run()))
        return self.outbox

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for uplink in self.uplinks:
            await uplink.close()
        await self.outbox.close()


@pytest.fixture(autouse=True)
def webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)


async def until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.02)


async def backlog(outbox: Outbox, uplink: str) -> int:
    return sum((await outbox.stats()).backlog[uplink].values())


async def until_async(probe: Callable[[], Awaitable[Any]], expected: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while (got := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{got!r} is not {expected!r} within {within}s")
        await asyncio.sleep(0.1)


async def test_single_events_signed_keyed_and_in_order(tmp_path: Path,
                                                       middleware: Middleware) -> None:
    rig = Rig(tmp_path, uplink_yaml(middleware.port, "batch: {max_events: 1}"))
    outbox = await rig.start()
    try:
        await outbox.commit([big(n, Lane.BUSINESS) for n in range(5)], {})
        await until(lambda: len(middleware.accepted) == 5, 10)
    finally:
        await rig.stop()
    assert [e["id"] for e in middleware.accepted] == [f"business-{n}" for n in range(5)]
    for request in middleware.requests:
        assert request.headers["Content-Type"] == "application/cloudevents+json"
        assert request.headers["Idempotency-Key"] == json.loads(request.body)["id"]
        assert verify_standard_webhook(SECRET, request.headers, request.body)
        tampered = request.body.replace(b'"n":', b'"n": ')
        assert not verify_standard_webhook(SECRET, request.headers, tampered)


async def test_a_refused_batch_is_split_until_only_the_bad_event_is_left(
        tmp_path: Path, middleware: Middleware) -> None:
    async def refuse_poison(events: list[dict[str, Any]], got: Received) -> web.Response:
        if any(e["id"] == "business-13" for e in events):
            return web.Response(status=400, text='{"error": "field data.n out of range"}')
        return web.Response(status=200)

    middleware.answer = refuse_poison
    rig = Rig(tmp_path, uplink_yaml(middleware.port, "batch: {max_events: 16, linger: 300ms}"))
    outbox = await rig.start()
    try:
        await outbox.commit([big(n, Lane.BUSINESS) for n in range(40)], {})
        await until(lambda: len(middleware.accepted) == 39, 15)
        await until(lambda: rig.uplinks[0].health.dead_lettered == 1, 5)
        [letter] = await outbox.dead_letters("mw")
    finally:
        await rig.stop()
    assert sorted(int(e["id"].split("-")[1]) for e in middleware.accepted) == [
        n for n in range(40) if n != 13]
    assert letter.event_id == "business-13"
    assert letter.answer == 'HTTP 400: {"error": "field data.n out of range"}'
    first = middleware.requests[0]
    assert first.headers["Content-Type"] == "application/cloudevents-batch+json"
    ids = [e["id"] for e in json.loads(first.body)]
    assert len(ids) == 16
    assert first.headers["Idempotency-Key"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
    assert all(verify_standard_webhook(SECRET, r.headers, r.body) for r in middleware.requests)


async def test_429_waits_for_retry_after_and_500_is_retried(tmp_path: Path,
                                                            middleware: Middleware) -> None:
    script = [web.Response(status=429, headers={"Retry-After": "2"}, text="slow down"),
              web.Response(status=503, text="maintenance")]

    async def scripted(events: list[dict[str, Any]], got: Received) -> web.Response:
        return script.pop(0) if script else web.Response(status=200)

    middleware.answer = scripted
    rig = Rig(tmp_path, uplink_yaml(middleware.port, "batch: {max_events: 1}"))
    outbox = await rig.start()
    try:
        await outbox.commit([big(1, Lane.BUSINESS)], {})
        await until(lambda: len(middleware.accepted) == 1, 15)
        letters = await outbox.dead_letters("mw")
    finally:
        await rig.stop()
    times = [r.at for r in middleware.requests]
    assert len(times) == 3  # 429, 503, 200: the same event each time
    assert len({r.headers["Idempotency-Key"] for r in middleware.requests}) == 1
    assert times[1] - times[0] >= 1.9  # Retry-After: 2 honoured
    assert not letters


async def test_a_slow_or_absent_server_is_waited_for_and_nothing_is_lost(
        tmp_path: Path) -> None:
    server = Middleware()
    slow = [True]

    async def sleepy(events: list[dict[str, Any]], got: Received) -> web.Response:
        if slow[0]:
            slow[0] = False
            await asyncio.sleep(3)  # longer than the read timeout
        return web.Response(status=200)

    server.answer = sleepy
    rig = Rig(tmp_path, uplink_yaml(server.port, "timeouts: {connect: 1s, read: 1s}\n"
                                    "    batch: {max_events: 1}\n"
                                    "    backoff: {initial: 0.2s, max: 1s}"))
    outbox = await rig.start()  # nothing listens yet
    try:
        await outbox.commit([big(n, Lane.BUSINESS) for n in range(3)], {})
        await until(lambda: rig.uplinks[0].health.last_error is not None, 10)
        assert "not reachable" in rig.uplinks[0].health.last_error
        assert not rig.uplinks[0].health.connected
        await server.start()
        await until(lambda: len({e["id"] for e in server.accepted}) == 3, 30)
    finally:
        await rig.stop()
        await server.stop()
    # The slow answer came after our read timeout, so business-0 was sent again:
    # at least once, with the same Idempotency-Key for the middleware to drop it.
    ids = [e["id"] for e in server.accepted]
    assert list(dict.fromkeys(ids)) == [f"business-{n}" for n in range(3)]
    assert ids.count("business-0") == 2
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert keys.count("business-0") == 2


async def test_https_with_a_test_ca_and_a_dead_mqtt_uplink_beside_it(tmp_path: Path) -> None:
    ca = TestCa(tmp_path, "plant")
    issued = ca.issue("middleware", ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    server = Middleware()
    await server.start(context)
    dead_port = free_port()  # no broker will ever listen here
    text = uplink_yaml(server.port, f"tls: {{ca_file: {ca.path}}}", scheme="https") + (
        f"  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {dead_port}}}\n")
    rig = Rig(tmp_path, text)
    outbox = await rig.start()
    try:
        for round_ in range(3):
            await outbox.commit([big(round_ * 10 + n, Lane.BUSINESS) for n in range(10)], {})
            await asyncio.sleep(0.3)
        await until(lambda: len(server.accepted) == 30, 10)
        https, mqtt = rig.uplinks
        assert isinstance(https, HttpsPoster)
        assert isinstance(mqtt, MqttPublisher)
        assert https.health.connected
        assert not mqtt.health.connected
        assert [c["which"] for c in https.health.certificates] == ["ca", "server"]
        await until_async(lambda: backlog(outbox, "mw"), 0, 5)
        assert await backlog(outbox, "broker") == 30  # kept for the broker
    finally:
        await rig.stop()
        await server.stop()


async def test_event_filters_choose_what_each_uplink_receives(
        tmp_path: Path, middleware: Middleware) -> None:
    rig = Rig(tmp_path, uplink_yaml(middleware.port,
                                    "events: [quality.*, production.confirmed]"))
    outbox = await rig.start()
    try:
        await outbox.commit([big(1, Lane.TELEMETRY), big(2, Lane.BUSINESS), big(3, Lane.HOLD)],
                            {})
        await until(lambda: len(middleware.accepted) == 2, 10)
        await until(lambda: rig.uplinks[0].health.skipped == 1, 5)
        await asyncio.sleep(0.5)  # the cursor is written every 0.2 s
        stats = await outbox.stats()
    finally:
        await rig.stop()
    assert sorted(e["id"] for e in middleware.accepted) == ["business-2", "hold-3"]
    # The telemetry event is passed over, not held back: nothing is pending.
    assert stats.backlog["mw"] == {0: 0, 1: 0, 2: 0}


async def test_mutual_tls_and_a_bearer_token(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MW_TOKEN", "t0k3n")
    ca = TestCa(tmp_path, "plant")
    issued = ca.issue("middleware", ["127.0.0.1"])
    client = ca.issue("edge", [], client=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.path))
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
    context.load_cert_chain(issued.cert, issued.key)
    server = Middleware()
    await server.start(context)
    tls = f"tls: {{ca_file: {ca.path}, cert_file: {client.cert}, key_file: {client.key}}}"
    auth = 'auth: {type: bearer, token: "${env:TEST_MW_TOKEN}"}'
    rig = Rig(tmp_path, uplink_yaml(server.port, f"{tls}\n    {auth}", scheme="https"))
    outbox = await rig.start()
    try:
        await outbox.commit([big(1, Lane.BUSINESS)], {})
        await until(lambda: len(server.accepted) == 1, 10)
    finally:
        await rig.stop()
        await server.stop()
    assert server.requests[0].headers["Authorization"] == "Bearer t0k3n"
    assert [c["which"] for c in rig.uplinks[0].health.certificates] == ["ca", "client", "server"]


async def test_an_untrusted_server_says_which_ca_to_configure(tmp_path: Path) -> None:
    for side in ("ours", "theirs"):
        (tmp_path / side).mkdir()
    ours, theirs = TestCa(tmp_path / "ours", "ours"), TestCa(tmp_path / "theirs", "theirs")
    issued = theirs.issue("middleware", ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    server = Middleware()
    await server.start(context)
    rig = Rig(tmp_path, uplink_yaml(server.port, f"tls: {{ca_file: {ours.path}}}",
                                    scheme="https"))
    outbox = await rig.start()
    try:
        await outbox.commit([big(1, Lane.BUSINESS)], {})
        await until(lambda: rig.uplinks[0].health.last_error is not None, 10)
        error = rig.uplinks[0].health.last_error
        assert await backlog(outbox, "mw") == 1  # kept, not dropped
    finally:
        await rig.stop()
        await server.stop()
    assert "not trusted" in error, error
    assert f"tls.ca_file ({ours.path})" in error, error
    assert not server.requests
