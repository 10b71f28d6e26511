"""MQTT over TLS against a real Mosquitto with a CA the test makes.

The right CA connects and delivers; a wrong CA or a certificate for another
host name is refused with an error that says what to change; mutual TLS works
with a client certificate; a server certificate close to expiry is flagged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from conftest import MOSQUITTO, free_port, port_open, wait_until
from pki import Issued, TestCa
from test_buffer import event

from agent.settings import load_config_text
from agent.uplinks.mqtt import MqttPublisher
from buffer import StoredEvent


class TlsBroker:
    def __init__(self, workdir: Path, server: Issued, ca: TestCa,
                 require_client_cert: bool = False) -> None:
        self.port = free_port()
        conf = workdir / f"tls-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"cafile {ca.path}\ncertfile {server.cert}\nkeyfile {server.key}\n"
            + ("require_certificate true\n" if require_client_cert else "")
            + ("user root\n" if os.geteuid() == 0 else ""))
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 10, "the TLS broker to listen")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[TestCa, TestCa]:
    return TestCa(tmp_path, "plant"), TestCa(tmp_path, "stranger")


def publisher(tmp_path: Path, port: int, tls: str) -> MqttPublisher:
    config = load_config_text(f"""
site: s
agent: {{id: edge}}
devices: [{{id: plc, protocol: modbus_tcp, host: 127.0.0.1, tags: [{{name: x, register: 40001}}]}}]
uplinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {port}, tls: {tls}}}
""", "config.yaml", tmp_path)
    return MqttPublisher(config.uplinks[0], config)  # type: ignore[arg-type]


def stored(n: int) -> StoredEvent:
    e = event(n)
    return StoredEvent(n, e.id, int(e.lane), e.subject, e.type, e.to_json())


async def settle(uplink: MqttPublisher, seconds: float = 10) -> None:
    for _ in range(int(seconds * 20)):
        if uplink.health.connected or uplink.health.last_error:
            return
        await asyncio.sleep(0.05)


async def test_the_right_ca_connects_and_delivers(tmp_path: Path,
                                                  pki: tuple[TestCa, TestCa]) -> None:
    plant, _ = pki
    broker = TlsBroker(tmp_path, plant.issue("broker", ["127.0.0.1", "localhost"]), plant)
    uplink = publisher(tmp_path, broker.port, f"{{ca_file: {plant.path}}}")
    try:
        await uplink.start()
        await settle(uplink)
        assert uplink.health.connected, uplink.health.last_error
        await asyncio.wait_for(uplink.submit(stored(1)), 10)  # PUBACK over TLS
        server = [c for c in uplink.health.certificates if c["which"] == "server"]
        assert server
        assert server[0]["subject"] == "CN=broker"
        assert server[0]["expiring"] is False
    finally:
        await uplink.close()
        broker.stop()


async def test_a_wrong_ca_is_refused_with_what_to_change(tmp_path: Path,
                                                         pki: tuple[TestCa, TestCa]) -> None:
    plant, stranger = pki
    broker = TlsBroker(tmp_path, plant.issue("broker", ["127.0.0.1"]), plant)
    uplink = publisher(tmp_path, broker.port, f"{{ca_file: {stranger.path}}}")
    try:
        await uplink.start()
        await settle(uplink)
        assert not uplink.health.connected
        error = uplink.health.last_error or ""
        assert "not trusted" in error
        assert f"tls.ca_file ({stranger.path}) must be the CA that signed it" in error
    finally:
        await uplink.close()
        broker.stop()


async def test_a_certificate_for_another_host_is_refused(tmp_path: Path,
                                                         pki: tuple[TestCa, TestCa]) -> None:
    plant, _ = pki
    broker = TlsBroker(tmp_path, plant.issue("broker", ["broker.elsewhere.example"]), plant)
    uplink = publisher(tmp_path, broker.port, f"{{ca_file: {plant.path}}}")
    try:
        await uplink.start()
        await settle(uplink)
        assert not uplink.health.connected
        assert "not valid for '127.0.0.1'" in (uplink.health.last_error or "")
    finally:
        await uplink.close()
        broker.stop()


async def test_mutual_tls_and_an_expiring_server_certificate(
        tmp_path: Path, pki: tuple[TestCa, TestCa]) -> None:
    plant, _ = pki
    broker = TlsBroker(tmp_path, plant.issue("broker", ["127.0.0.1"], days=10), plant,
                       require_client_cert=True)
    client = plant.issue("edge", [], client=True)
    without = publisher(tmp_path, broker.port, f"{{ca_file: {plant.path}}}")
    uplink = publisher(tmp_path, broker.port, f"{{ca_file: {plant.path}, "
                                              f"cert_file: {client.cert}, key_file: {client.key}}}")
    try:
        await without.start()
        await uplink.start()
        await settle(uplink)
        assert uplink.health.connected, uplink.health.last_error
        await asyncio.wait_for(uplink.submit(stored(2)), 10)
        expiring = {c["which"]: c for c in uplink.health.certificates}
        assert expiring["server"]["expiring"] is True  # 10 days left < 30
        assert 9 < float(expiring["server"]["days_left"]) <= 10  # type: ignore[arg-type]
        assert expiring["client"]["expiring"] is False
        await asyncio.sleep(2)
        assert not without.health.connected  # no client certificate, no session
        # ... and it says so, with what to change: under TLS 1.3 the broker refuses after
        # the handshake and paho calls no connect callback, so this used to be silent.
        assert without.health.last_error is not None
        assert "the server requires a client certificate" in without.health.last_error
        assert without.health.last_error.endswith("set tls.cert_file and tls.key_file")
        assert without.health.next_attempt_at is not None
    finally:
        await without.close()
        await uplink.close()
        broker.stop()


async def test_a_client_certificate_from_another_ca_is_named(
        tmp_path: Path, pki: tuple[TestCa, TestCa], caplog: pytest.LogCaptureFixture) -> None:
    plant, stranger = pki
    broker = TlsBroker(tmp_path, plant.issue("broker", ["127.0.0.1"]), plant,
                       require_client_cert=True)
    foreign = stranger.issue("edge", [], client=True)
    tls = f"{{ca_file: {plant.path}, cert_file: {foreign.cert}, key_file: {foreign.key}}}"
    uplink = publisher(tmp_path, broker.port, tls)
    try:
        await uplink.start()
        await settle(uplink)
        assert not uplink.health.connected
        assert uplink.health.last_error is not None
        assert "the server refused the client certificate" in uplink.health.last_error
        assert "must be signed by a CA the server trusts" in uplink.health.last_error
        assert "refused the client certificate" in caplog.text  # in the log too, once
    finally:
        await uplink.close()
        broker.stop()


async def test_insecure_connects_to_anything_and_says_so_at_start(
        tmp_path: Path, pki: tuple[TestCa, TestCa], caplog: pytest.LogCaptureFixture) -> None:
    plant, _ = pki
    broker = TlsBroker(tmp_path, plant.issue("broker", ["elsewhere.example"]), plant)
    uplink = publisher(tmp_path, broker.port, "{insecure: true}")
    try:
        await uplink.start()
        await settle(uplink)
        assert uplink.health.connected, uplink.health.last_error
        assert "TLS certificate verification is OFF" in caplog.text
    finally:
        await uplink.close()
        broker.stop()


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"(?s)uplinks\[0\]\.tls\.ca_file.*no such file"):
        publisher(tmp_path, 8883, "{ca_file: missing-ca.pem}")
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        publisher(tmp_path, 8883, f"{{cert_file: {tmp_path}}}")
