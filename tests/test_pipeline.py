"""The writer loop against a real SQLite outbox: routing, persistence, restart continuity."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent.derive import DeriveContext, compile_assets, compile_devices
from agent.events import Lane, short_type
from agent.pipeline import Pipeline
from agent.settings import load_config_text
from agent.shared import Sample
from buffer import Outbox

CONFIG = """
site: s
agent: {id: a}
devices:
  - id: plc
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: state, register: 40001}
      - {name: good, register: 40002}
      - {name: temp, register: 30001, type: int16, publish: on_change, deadband: 1}
assets:
  - id: press-1
    state: {tag: plc.state, map: {1: running, 3: down}}
    counters: {good: plc.good}
    production: {interval: 1h}
"""


async def make_pipeline(path: Path, clock: list[float]) -> Pipeline:
    config = load_config_text(CONFIG, "config.yaml", path.parent)
    outbox = await Outbox.open(path, [])
    return Pipeline(compile_assets(config), await outbox.load_states(), outbox,
                    DeriveContext(site="s", agent="a", epoch=outbox.epoch),
                    asyncio.Queue(), device_specs=compile_devices(config),
                    clock=lambda: clock[0])


async def test_state_and_telemetry_survive_a_restart(tmp_path: Path) -> None:
    clock = [1000.0]
    first = await make_pipeline(tmp_path / "b.db", clock)
    events = await first.step([[Sample("plc", "state", 1, "good", 1000.0),
                                Sample("plc", "good", 10, "good", 1000.0),
                                Sample("plc", "temp", 20, "good", 1000.0)]])
    assert sorted(e.type for e in events) == ["machine.state_changed", "telemetry"]
    telemetry = next(e for e in events if e.type == "telemetry")
    assert (telemetry.subject, telemetry.lane, telemetry.sequence) == ("plc", Lane.TELEMETRY, 1)
    clock[0] = 1001.0
    await first.step([[Sample("plc", "good", 25, "good", 1001.0)]])
    await first.outbox.close()

    second = await make_pipeline(tmp_path / "b.db", clock)  # a restart: state from SQLite
    clock[0] = 1002.0
    again = await second.step([[Sample("plc", "state", 1, "good", 1002.0, True),
                                Sample("plc", "good", 30, "good", 1002.0, True),
                                Sample("plc", "temp", 20, "good", 1002.0, True)]])
    assert again == []  # same state, temperature unchanged: nothing to say
    moved = await second.step([[Sample("plc", "temp", 22, "good", 1003.0)]])
    assert [(e.type, e.sequence) for e in moved] == [("telemetry", 2)]  # sequence continues
    stopped = await second.stop()
    assert [(e.type, e.data["good"], e.data["trigger"]) for e in stopped] == [
        ("production.confirmed", 20, "stop")]  # 10 -> 30 across the restart, exactly
    rows = await second.outbox.fetch(Lane.BUSINESS, 0, 100)
    assert json.loads(rows[-1].body)["data"]["good"] == 20
    await second.outbox.close()


async def test_a_full_disk_keeps_business_events_flowing_and_counts_the_telemetry_it_sheds(
        tmp_path: Path) -> None:
    """No room for a read's 200 telemetry events: the stop it also carries is committed
    with the state, the telemetry is counted as dropped with an alarm, and nothing is
    held back. Once space returns, telemetry flows again."""
    clock = [1000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    await pipeline.step([[Sample("plc", "state", 1, "good", 1000.0),
                          Sample("plc", "good", 10, "good", 1000.0)]])
    async with pipeline.outbox.transaction() as db:  # a few pages to spare: a tight disk
        pages = await (await db.execute("PRAGMA page_count")).fetchone()
        assert pages is not None
        await db.execute(f"PRAGMA max_page_count = {pages[0] + 2}")
    clock[0] = 1001.0
    readings = [Sample("plc", "temp", 20 + n, "good", 1001.0) for n in range(0, 400, 2)]
    stop = Sample("plc", "state", 3, "good", 1001.0)
    events = await asyncio.wait_for(pipeline.step([[*readings, stop]]), 10)
    assert [e.type for e in events] == ["machine.state_changed"]
    assert pipeline.last_error is None
    assert [r.type for r in await pipeline.outbox.fetch(Lane.BUSINESS, 0, 100)][-1] == \
        "machine.state_changed"
    assert await pipeline.outbox.fetch(Lane.TELEMETRY, 0, 1000) == []
    stats = await pipeline.outbox.stats()
    assert stats.drops == {"-": {"telemetry": 200}}  # exactly what was left out
    [alarm] = [a for a in stats.alarms if a.key == "buffer.dropped"]
    assert "200 telemetry" in alarm.message
    assert "the disk was full" in alarm.message
    assert pipeline.states["press-1"].machine_state == "down"
    async with pipeline.outbox.transaction() as db:
        await db.execute("PRAGMA max_page_count = 1000000")
    clock[0] = 1002.0
    events = await pipeline.step([[Sample("plc", "temp", 500, "good", 1002.0)]])
    assert [e.type for e in events] == ["telemetry"]
    async with pipeline.outbox.transaction() as db:
        verdict = await (await db.execute("PRAGMA integrity_check")).fetchone()
    assert verdict is not None
    assert verdict[0] == "ok"
    await pipeline.outbox.close()


def test_derivation_never_changes_the_committed_telemetry_memory() -> None:
    """The committed state and its derived successor share unchanged memories (copy on
    write): if the commit fails, the committed one must still say what was published."""
    from agent.derive import apply_device_samples, apply_device_tick
    from agent.derive.state import DeviceState

    config = load_config_text(CONFIG.replace("deadband: 1}", "deadband: 1, min_interval: 5}"),
                              "config.yaml", Path("."))
    ctx = DeriveContext(site="s", agent="a", epoch=1)
    spec = compile_devices(config)[0]
    committed, events = apply_device_samples(
        spec, DeviceState(), [Sample("plc", "temp", 20, "good", 1000.0)], 1000.0, ctx)
    assert [e.data["value"] for e in events] == [20]
    before = committed.to_json()
    held, events = apply_device_samples(
        spec, committed, [Sample("plc", "temp", 25, "good", 1001.0)], 1001.0, ctx)
    assert events == []  # within min_interval: held back
    assert committed.to_json() == before
    assert apply_device_tick(spec, held, 1002.0, ctx) == (held, [])  # nothing due: same object
    released, events = apply_device_tick(spec, held, 1006.0, ctx)
    assert [e.data["value"] for e in events] == [25]
    assert committed.to_json() == before
    assert held.telemetry["plc.temp"].held_back
    assert not released.telemetry["plc.temp"].held_back


async def test_the_writer_stops_when_cancelled_just_as_a_batch_arrives(tmp_path: Path) -> None:
    """A stop cancels the writer at any moment, often just as a batch is handed over.
    (asyncio.wait_for on Python 3.11 swallowed such a cancellation; the stop then hung.)"""
    clock = [1000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    try:
        for attempt in range(40):
            writer = asyncio.create_task(pipeline.run())
            await asyncio.sleep(0.01)  # waiting for a batch now
            pipeline.queue.put_nowait([Sample("plc", "temp", attempt, "good", 1000.0)])
            for _ in range(attempt % 4):  # let the hand-over get that far
                await asyncio.sleep(0)
            writer.cancel()
            done, _ = await asyncio.wait([writer], timeout=2)
            assert writer in done, f"the writer ignored its cancellation (attempt {attempt})"
            while not pipeline.queue.empty():
                pipeline.queue.get_nowait()
    finally:
        await pipeline.outbox.close()


async def test_a_counter_reading_no_machine_makes_raises_an_alarm_that_stays(
        tmp_path: Path) -> None:
    clock = [1000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    await pipeline.step([[Sample("plc", "state", 1, "good", 1000.0),
                          Sample("plc", "good", 10, "good", 1000.0)]])
    clock[0] = 1001.0
    await pipeline.step([[Sample("plc", "good", 1e300, "good", 1001.0)]])
    [alarm] = [a for a in await pipeline.outbox.alarms() if a.key.startswith("counter.")]
    assert alarm.key == "counter.held_back.press-1"
    assert "counter plc.good of asset press-1 (device plc) read 1e+300" in alarm.message
    stopped = await pipeline.stop()
    [confirmed] = [e for e in stopped if e.type == "production.confirmed"]
    assert confirmed.data["good"] == 0  # never booked as production
    assert [h["value"] for h in confirmed.data["held_back"]] == [1e300]
    assert [a.key for a in await pipeline.outbox.alarms()] == ["counter.held_back.press-1"]
    await pipeline.outbox.close()


async def test_a_device_that_goes_silent_is_no_data_in_the_history_not_its_last_state(
        tmp_path: Path) -> None:
    """Device loss reaches derivation: no machine.state_changed (a PLC that cannot be read
    has no state), and the shift history holds the silence as no data, also across a
    restart, until the first reading after it. The device's own status is an event each
    way, once per outage: the restart in the middle does not report it again."""
    from buffer.history import segments

    clock = [1000.0]
    first = await make_pipeline(tmp_path / "b.db", clock)
    await first.step([[Sample("plc", "state", 1, "good", 1000.0)]])
    clock[0] = 1060.0
    first.device_lost("plc", 1030.0)  # its last reading came at 1030
    [offline] = await first.step([])  # no state change: only the device's status
    assert (offline.type, offline.subject, offline.time) == ("device.status", "plc", 1060.0)
    assert offline.data == {"device": "plc", "status": "offline",
                            "last_sample_at": "1970-01-01T00:17:10.000Z", "offline_s": None}
    assert first.states["press-1"].no_data_since == 1030.0
    first.device_lost("plc", 1030.0)  # the driver says it again: nothing new
    assert await first.step([]) == []
    await first.outbox.close()
    second = await make_pipeline(tmp_path / "b.db", clock)  # restarted while it is silent
    assert second.states["press-1"].no_data_since == 1030.0
    clock[0] = 1200.0
    second.device_lost("plc", 1030.0)  # down at the start, as when it stayed down
    assert await second.step([]) == []  # reported before the restart
    back = await second.step([[Sample("plc", "state", 1, "good", 1190.0, True)]])
    # running before, running after: no state change to report; the device is back
    [online] = back
    assert (online.type, online.time, online.data["status"]) == ("device.status", 1190.0,
                                                                 "online")
    assert online.data["offline_s"] == 160.0
    assert online.sequence == offline.sequence + 1
    history = await segments(second.outbox, "press-1", 0.0, 2000.0)
    await second.outbox.close()
    assert [(s.state, s.start, s.end) for s in history] == [
        ("running", 1000.0, 1030.0), ("no_data", 1030.0, 1190.0), ("running", 1190.0, None)]


async def test_a_device_back_online_says_so_before_its_first_telemetry(
        tmp_path: Path) -> None:
    """The status and the telemetry share the lane and the device's sequence: a consumer
    that reads the lane in order sees the device come back, then its values."""
    clock = [1000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    await pipeline.step([[Sample("plc", "temp", 20, "good", 1000.0)]])
    pipeline.device_lost("plc", 1000.0)
    clock[0] = 1010.0
    [offline] = await pipeline.step([])
    clock[0] = 1020.0
    back = await pipeline.step([[Sample("plc", "temp", 25, "good", 1019.0, True),
                                 Sample("plc", "state", 1, "good", 1018.5, True)]])
    lane = [(e.type, e.data.get("status"), e.sequence) for e in back
            if e.lane == Lane.TELEMETRY]
    assert lane == [("device.status", "online", offline.sequence + 1),
                    ("telemetry", None, offline.sequence + 2)]
    assert back[0].time == 1018.5  # the earliest value of the scan
    rows = await pipeline.outbox.fetch(Lane.TELEMETRY, 0, 10)
    assert [short_type(r.type) for r in rows] == [
        "telemetry", "device.status", "device.status", "telemetry"]
    await pipeline.outbox.close()


async def test_a_state_value_the_plc_marks_bad_is_no_data_until_a_good_one(
        tmp_path: Path) -> None:
    from buffer.history import segments

    clock = [1000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    await pipeline.step([[Sample("plc", "state", 1, "good", 1000.0)]])
    clock[0] = 1100.0
    assert await pipeline.step([[Sample("plc", "state", None, "bad", 1100.0)]]) == []
    assert pipeline.states["press-1"].no_data_since == 1100.0
    clock[0] = 1150.0
    await pipeline.step([[Sample("plc", "state", 1, "good", 1150.0)]])
    history = await segments(pipeline.outbox, "press-1", 0.0, 2000.0)
    await pipeline.outbox.close()
    assert [(s.state, s.start, s.end) for s in history] == [
        ("running", 1000.0, 1100.0), ("no_data", 1100.0, 1150.0), ("running", 1150.0, None)]
