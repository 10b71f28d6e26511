"""Resuming after a broker outage: the reconnect delay doubles up to reconnect_max and
starts over once connected; while away, the uplink says when it tries next; once back,
the error that kept it away is gone. Against a real Mosquitto stopped and started."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from pathlib import Path

from conftest import Broker
from pki import TestCa
from test_mqtt_tls import stored

from agent.settings import load_config_text
from agent.status.board import StatusBoard
from agent.status.page import render
from agent.uplinks.mqtt import MqttPublisher
from buffer import StoredEvent


def publisher(tmp_path: Path, port: int, extra: str = "") -> MqttPublisher:
    config = load_config_text(f"""
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {port}{extra}}}
""", "config.yaml", tmp_path)
    return MqttPublisher(config.uplinks[0], config)  # type: ignore[arg-type]


async def until(predicate: object, within: float) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_after_a_long_outage_the_uplink_resumes_within_reconnect_max(
        tmp_path: Path, broker: Broker) -> None:
    uplink = publisher(tmp_path, broker.port, ", reconnect_max: 2s")
    board = StatusBoard(site="s", agent="edge", alive=True)
    board.uplinks = [uplink.health]
    try:
        await uplink.start()
        await until(lambda: uplink.health.connected, 10)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(9)  # long enough for an uncapped delay to reach 8 s
        assert not uplink.health.connected
        due = uplink.health.next_attempt_at
        assert due is not None
        assert due - time.time() <= 2.0  # never further away than reconnect_max
        assert "Next try</dt><dd>20" in render(board.snapshot())  # the technician sees when
        await asyncio.to_thread(broker.start)
        resumed = await until(lambda: uplink.health.connected, 10)
        assert resumed <= 2.0 + 1.5  # reconnect_max, and a connect's worth of slack
        assert uplink.health.next_attempt_at is None
        assert uplink.health.last_error is None  # what kept it away is over
    finally:
        await uplink.close()


def test_the_default_cap_is_ten_seconds(tmp_path: Path) -> None:
    assert publisher(tmp_path, 1883).settings.reconnect_max == 10.0


async def test_a_frozen_broker_is_noticed_by_the_keepalive_and_left_for_a_new_session(
        tmp_path: Path, broker: Broker) -> None:
    """A broker that stops answering keeps its TCP connection open: only MQTT's keepalive
    notices. paho's keepalive runs on the agent's event loop (loop_misc, once a second)."""
    uplink = publisher(tmp_path, broker.port, ", keepalive: 5s, reconnect_max: 1s")
    assert broker.proc is not None
    try:
        await uplink.start()
        await until(lambda: uplink.health.connected, 10)
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            # A PINGREQ after 5 s without traffic, and no answer within another 5 s.
            noticed = await until(lambda: not uplink.health.connected, 15)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        assert 9 <= noticed <= 12.5, noticed
        await until(lambda: uplink.health.connected, 10)
        await asyncio.wait_for(uplink.submit(stored(1)), 10)
    finally:
        await uplink.close()


async def test_a_connect_that_hangs_does_not_hold_the_event_loop(tmp_path: Path) -> None:
    """A TLS server that accepts and never answers the handshake: the attempt waits out
    paho's connect timeout in a worker thread while the loop goes on with its work."""
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    ca = TestCa(tmp_path, "plant")
    uplink = publisher(tmp_path, silent.getsockname()[1], f", tls: {{ca_file: {ca.path}}}")
    loop = asyncio.get_running_loop()
    try:
        await uplink.start()
        await until(lambda: bool(accepted), 5)
        worst = 0.0
        for _ in range(30):  # 1.5 s of 50 ms sleeps, each timed
            before = loop.time()
            await asyncio.sleep(0.05)
            worst = max(worst, loop.time() - before - 0.05)
        assert worst < 0.2, f"the loop was held for {worst:.2f} s"
        assert not uplink.health.connected
    finally:
        await uplink.close()
        silent.close()
        for sock in accepted:
            sock.close()


async def test_publishes_larger_than_the_socket_buffer_all_go_out_once_the_broker_reads(
        tmp_path: Path, broker: Broker) -> None:
    """A broker that stops reading leaves megabytes unwritten: paho registers for writing
    once and waits, so the loop must keep watching the socket. They go out, and are
    acknowledged, once the broker reads again, with no further publish to push them."""
    uplink = publisher(tmp_path, broker.port, ", max_inflight: 100")
    assert broker.proc is not None
    body = "x" * 512 * 1024
    try:
        await uplink.start()
        await until(lambda: uplink.health.connected, 10)
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            # 30 MB: far more than loopback's socket buffers hold.
            pending = [uplink.submit(StoredEvent(n, f"big-{n}", 1, "press", "telemetry",
                                                 body)) for n in range(60)]
            await asyncio.sleep(1.0)
            assert not any(future.done() for future in pending)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        await asyncio.wait_for(asyncio.gather(*pending), 30)
    finally:
        await uplink.close()
