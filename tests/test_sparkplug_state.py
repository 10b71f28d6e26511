"""What the Edge Node keeps and reads besides its messages: the primary host's STATE,
bdSeq across restarts, and the current values restored from committed states. Hostile
input included: a STATE that is not one, a bdSeq file that lies, a state that is garbage."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.derive.state import DEVICE_KEY, AssetState, DeviceState, OpenHold, TelemetryMemory
from agent.settings import load_config_text
from agent.uplinks.sparkplug import catalogue
from agent.uplinks.sparkplug.bdseq import BdSeqStore
from agent.uplinks.sparkplug.host import PrimaryHost, parse_state
from agent.uplinks.sparkplug.payload import Quality
from agent.uplinks.sparkplug.restore import from_states

CONFIG = """
site: plant
devices:
  - id: press-plc
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: state, register: 40001, publish: on_change}
      - {name: temp, register: 40002, publish: on_change}
assets:
  - {id: press-1, state: {tag: press-plc.state, map: {1: running}}}
uplinks:
  - {id: scada, type: sparkplug, group_id: g, host: 127.0.0.1}
"""


@pytest.mark.parametrize(("payload", "why"), [
    (b"ONLINE", "not JSON"),  # Sparkplug 2.2's plain text
    (b'["online"]', "not a JSON object"),
    (b'{"online": "true", "timestamp": 1}', "'online'"),
    (b'{"online": 1, "timestamp": 1}', "'online'"),
    (b'{"online": true}', "'timestamp'"),
    (b'{"online": true, "timestamp": -5}', "'timestamp'"),
    (b'{"online": true, "timestamp": 1.5e300}', "'timestamp'"),
    (b'{"online": true, "timestamp": true}', "'timestamp'"),
    (b"\xff\xfe", "not JSON"),
    (b'{"online": true, "timestamp": 1, "pad": "' + b"x" * 5000 + b'"}', "bytes"),
])
def test_a_state_that_is_not_one_is_refused_with_why(payload: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_state(payload)


def test_a_late_state_does_not_undo_a_newer_one() -> None:
    host = PrimaryHost("scada")
    assert host.topic == "spBv1.0/STATE/scada"
    assert not host.online
    assert host.hear(parse_state(b'{"online": true, "timestamp": 2000}'))
    assert not host.hear(parse_state(b'{"online": false, "timestamp": 1999}'))
    assert host.online
    assert host.hear(parse_state(b'{"online": false, "timestamp": 2000}'))
    assert not host.online
    host.forget()  # a new connection: nothing known there yet
    assert host.hear(parse_state(b'{"online": true, "timestamp": 10}'))


def test_bd_seq_goes_on_from_the_last_one_used_and_wraps(tmp_path: Path) -> None:
    store = BdSeqStore(tmp_path / "b.bdseq")
    assert store.next() == 0
    store.save(41)
    assert BdSeqStore(tmp_path / "b.bdseq").next() == 42
    store.save(255)
    assert store.next() == 0


@pytest.mark.parametrize("content", ["banana", "300", "-1", "", "\x00\x01"])
def test_a_bd_seq_file_that_lies_starts_over_at_zero(tmp_path: Path, content: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "b.bdseq"
    path.write_text(content)
    assert BdSeqStore(path).next() == 0


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 kB tmpfs, filled up: every write there fails with ENOSPC."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small filesystem needs mount rights (root): {mounted.stderr.strip()}")
    try:
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_costs_the_kept_bd_seq_a_warning_once_and_nothing_else(
        full_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = BdSeqStore(full_disk / "b.bdseq")
    with caplog.at_level(logging.WARNING, "floorlink.sparkplug"):
        store.save(1)
        store.save(2)
    warnings = [r.getMessage() for r in caplog.records if "could not be kept" in r.getMessage()]
    assert len(warnings) == 1
    assert "No space left" in warnings[0]
    assert store.next() == 0  # nothing was kept: the next start begins again at 0
    (full_disk / "filler").unlink()
    store.save(7)  # room again: kept, and a later failure would warn again
    assert store.next() == 8


def test_restored_values_come_from_the_committed_states(tmp_path: Path) -> None:
    config = load_config_text(CONFIG, "c.yaml", tmp_path)
    press = AssetState(machine_state="running", state_code=1, state_since=100.0,
                       hold=OpenHold("h-1", 90.0, "LOT-9", "Burr", 5.0, "WO-1"))
    press.telemetry["press-plc.state"] = TelemetryMemory(
        seen=True, value=1, published=True, published_value=1, published_at=99.0)
    device = DeviceState({"press-plc.temp": TelemetryMemory(
        seen=True, value=7, quality="uncertain", published=True, published_value=7,
        published_quality="uncertain", published_at=98.0)}, offline_since=120.0)
    restored = from_states({"press-1": press.to_json(), DEVICE_KEY + "press-plc":
                            device.to_json()}, catalogue.build(config), now_ms=5)
    by_ref = {u.ref: u for u in restored.updates}
    assert by_ref["press-1/State"].value == "running"
    assert by_ref["press-1/State"].at_ms == 100_000
    assert by_ref["press-1/Hold/Open"].value is True
    assert by_ref["press-1/Lot"].value == "LOT-9"
    assert by_ref["press-1/Downtime/Open"].value is False
    assert "press-1/Work Order" not in by_ref  # none known: born null
    assert by_ref["press-plc.state"].value == 1
    assert by_ref["press-plc.temp"].quality == Quality.STALE
    assert restored.offline == {"press-plc"}


def test_a_state_that_cannot_be_read_costs_only_its_own_values(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config_text(CONFIG, "c.yaml", tmp_path)
    good = DeviceState({"press-plc.temp": TelemetryMemory(
        seen=True, value=7, published=True, published_value=7)}).to_json()
    with caplog.at_level(logging.WARNING, "floorlink.sparkplug"):
        restored = from_states({"press-1": "{not json", DEVICE_KEY + "press-plc": good,
                                "gone-asset": AssetState(machine_state="idle").to_json()},
                               catalogue.build(config), now_ms=5)
    assert [u.ref for u in restored.updates] == ["press-plc.temp"]
    assert any("press-1" in r.getMessage() for r in caplog.records)
