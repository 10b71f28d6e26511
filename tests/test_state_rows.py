"""Derivation state stored per telemetry memory: what a commit writes, what a restart and
an upgrade read back (buffer/states.py, agent/derive/persisted.py)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
from pathlib import Path

import pytest

from agent.derive import DeriveContext, compile_assets, compile_devices
from agent.derive.state import DEVICE_KEY, DeviceState, TelemetryMemory
from agent.pipeline import Pipeline
from agent.settings import load_config_text
from agent.shared import Sample
from buffer import Outbox
from buffer.migrate import SCHEMA_VERSION
from buffer.states import BUCKETS, bucket_of, merged

TAGS = 2500


def config_text() -> str:
    tags = "\n".join(f"      - {{name: v{n}, register: {40001 + n}, publish: on_change}}"
                     for n in range(TAGS))
    return f"""
site: s
agent: {{id: a}}
devices:
  - id: plc
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
{tags}
"""


async def make_pipeline(path: Path, clock: list[float]) -> Pipeline:
    config = load_config_text(config_text(), "config.yaml", path.parent)
    outbox = await Outbox.open(path, [])
    return Pipeline(compile_assets(config), await outbox.load_states(), outbox,
                    DeriveContext(site="s", agent="a", epoch=outbox.epoch),
                    asyncio.Queue(), device_specs=compile_devices(config),
                    clock=lambda: clock[0])


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def checkpoint(outbox: Outbox) -> None:
    async with outbox.transaction():
        pass
    await outbox.read("PRAGMA wal_checkpoint(TRUNCATE)")


async def test_one_tag_of_2500_moving_writes_one_memory_not_the_device(tmp_path: Path) -> None:
    """The device's document was about 500 kB with every memory in it, written again in
    each commit where one tag moved. Now that commit writes the one memory."""
    path = tmp_path / "b.db"
    clock = [1000.0]
    pipeline = await make_pipeline(path, clock)
    await pipeline.step([[Sample("plc", f"v{n}", n, "good", 1000.0) for n in range(TAGS)]])
    assert await pipeline.outbox.read("SELECT count(*) FROM telemetry_memory") == [(BUCKETS,)]
    [(document,)] = await pipeline.outbox.read(
        "SELECT state FROM asset_state WHERE asset = ?", (DEVICE_KEY + "plc",))
    assert "telemetry" not in json.loads(document)
    assert len(document) < 200
    await checkpoint(pipeline.outbox)
    before = wal_bytes(path)

    clock[0] = 1001.0
    events = await pipeline.step([[Sample("plc", "v7", 70, "good", 1001.0)]])
    assert [e.data["value"] for e in events] == [70]
    written = wal_bytes(path) - before
    # The event, its index entries, the small document and the one row of ~40 memories
    # holding the tag: nine pages of log here (37 kB), where the whole document took 915 kB.
    assert written < 100_000, f"{written} bytes of log for one moved tag"

    # An unchanged value (a new sample, an equal memory) writes no memory row at all.
    rows = await pipeline.outbox.read("SELECT bucket, memories FROM telemetry_memory")
    await pipeline.step([[Sample("plc", "v8", 8, "good", 1002.0)]])
    assert await pipeline.outbox.read("SELECT bucket, memories FROM telemetry_memory") == rows
    committed = {tag: vars(m) for tag, m in pipeline.device_states["plc"].telemetry.items()}
    await pipeline.outbox.close()

    again = await make_pipeline(path, clock)  # all 2,500 memories, from their 64 rows
    assert {tag: vars(m) for tag, m in again.device_states["plc"].telemetry.items()} == committed
    await again.outbox.close()


async def test_a_restart_reads_back_exactly_the_state_that_was_committed(
        tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    clock = [1000.0]
    first = await make_pipeline(path, clock)
    await first.step([[Sample("plc", f"v{n}", n, "good", 1000.0) for n in range(5)]])
    clock[0] = 1001.0
    # A flag after a number, and values JSON has no word for: each is kept as itself.
    await first.step([[Sample("plc", "v1", True, "good", 1001.0),
                       Sample("plc", "v2", math.nan, "good", 1001.0),
                       Sample("plc", "v3", -math.inf, "good", 1001.0),
                       Sample("plc", "v4", 4.0, "good", 1001.0)]])
    committed = json.loads(first.device_states["plc"].to_json())
    await first.outbox.close()

    second = await make_pipeline(path, clock)
    again = second.device_states["plc"]
    assert json.loads(again.to_json()) == committed or math.isnan(
        again.telemetry["plc.v2"].value)  # NaN is unequal to itself: compared below
    memories = again.telemetry
    assert memories["plc.v1"].value is True
    assert math.isnan(memories["plc.v2"].value)
    assert memories["plc.v3"].value == -math.inf
    assert type(memories["plc.v4"].value) is float
    assert memories["plc.v4"].value == 4.0
    assert {tag: (m.published, m.published_at) for tag, m in memories.items()} == {
        tag: (m["published"], m["published_at"])
        for tag, m in committed["telemetry"].items()}
    assert again.sequences == first.device_states["plc"].sequences
    await second.outbox.close()


def test_a_number_that_becomes_the_same_number_of_another_type_is_written() -> None:
    """1 == 1.0 == True in Python; a birth after a restart must still say which it was."""
    one = TelemetryMemory(True, 1, "good", True, 1, "good", 1.0)
    for other in (True, 1.0):
        twin = one.clone()
        twin.value = other
        assert not twin.same_as(one)
    assert one.clone().same_as(one)


def schema4_buffer(path: Path, device_state: str) -> None:
    """A buffer as floorlink wrote it before schema 5: the memories inside the document."""
    schema = (Path(__file__).parents[1] / "buffer" / "schema.sql").read_text()
    start = schema.index("CREATE TABLE telemetry_memory")
    schema = schema[:start] + schema[schema.index(");", start) + 2:]
    with sqlite3.connect(path) as db:
        db.executescript(schema)
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("schema_version", "4"), ("epoch", "1700000000000")])
        db.execute("INSERT INTO asset_state VALUES (?, ?, 1.0)",
                   (DEVICE_KEY + "plc", device_state))
    db.close()


async def test_an_older_buffer_has_its_memories_moved_to_rows_on_opening(
        tmp_path: Path) -> None:
    state = DeviceState({"plc.v0": TelemetryMemory(True, 5, "good", True, 5, "good", 990.0),
                         "plc.v1": TelemetryMemory(True, math.inf, "good", True, math.inf,
                                                   "good", 991.0)},
                        {"telemetry": 42})
    path = tmp_path / "b.db"
    schema4_buffer(path, state.to_json())  # infinity written as the standard json does

    outbox = await Outbox.open(path, [])
    assert await outbox.read("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]
    stored: dict[str, object] = {}
    for (memories,) in await outbox.read("SELECT memories FROM telemetry_memory"):
        stored.update(json.loads(memories))
    assert sorted(stored) == ["plc.v0", "plc.v1"]
    [(document,)] = await outbox.read("SELECT state FROM asset_state")
    assert json.loads(document) == {"sequences": {"telemetry": 42}, "offline_since": None}
    restored = DeviceState.from_json((await outbox.load_states())[DEVICE_KEY + "plc"])
    assert restored.telemetry["plc.v0"] == state.telemetry["plc.v0"]
    assert restored.telemetry["plc.v1"].published_value == math.inf
    assert restored.sequences == {"telemetry": 42}
    await outbox.close()
    assert any(name.startswith("b.db.schema4-") for name in os.listdir(tmp_path))

    clock = [1000.0]  # and derivation carries on from it: 5 is not news, 6 is
    pipeline = await make_pipeline(path, clock)
    events = await pipeline.step([[Sample("plc", "v0", 5, "good", 1000.0),
                                   Sample("plc", "v1", 6, "good", 1000.0)]])
    assert [(e.data["tag"], e.data["value"], e.sequence) for e in events] == [
        ("plc.v1", 6, 43)]
    await pipeline.outbox.close()


def test_memories_of_a_state_whose_document_was_never_written_are_read_back() -> None:
    """A state still at its defaults has no document row; its memories still count."""
    memory = TelemetryMemory(True, 3, "good")
    states = merged({}, [(DEVICE_KEY + "plc", json.dumps({"plc.v0": vars(memory)}))])
    assert DeviceState.from_json(states[DEVICE_KEY + "plc"]).telemetry == {"plc.v0": memory}


async def test_an_unreadable_row_of_memories_costs_only_its_own_tags(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged or hand-edited row: a warning, never a traceback at start-up."""
    path = tmp_path / "b.db"
    clock = [1000.0]
    first = await make_pipeline(path, clock)
    await first.step([[Sample("plc", f"v{n}", n, "good", 1000.0) for n in range(TAGS)]])
    [(bucket,)] = await first.outbox.read("SELECT min(bucket) FROM telemetry_memory")
    await first.outbox.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE telemetry_memory SET memories = ? WHERE bucket = ?",
                   ("not json {", bucket))
        db.execute("UPDATE telemetry_memory SET memories = '[1, 2]' WHERE bucket = ?",
                   (bucket + 1,))
    db.close()

    again = await make_pipeline(path, clock)
    memories = again.device_states["plc"].telemetry
    lost = {tag for tag in (f"plc.v{n}" for n in range(TAGS))
            if bucket_of(tag) in (bucket, bucket + 1)}
    assert lost
    assert set(memories) == {f"plc.v{n}" for n in range(TAGS)} - lost
    assert caplog.text.count("cannot be read") == 2
    await again.outbox.close()
