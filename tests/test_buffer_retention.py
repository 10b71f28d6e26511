"""Retention at its limits, and a full disk, on real SQLite files.

Limits are set in bytes small enough to reach in a test; the policy is the same
at any size: telemetry goes first (by age, then by size), business events only
at the hard limit with a critical alarm, and a dead uplink loses only its own
backlog while a healthy one keeps everything it still needs.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from agent.errors import BufferError
from agent.events import Event, Lane
from buffer import Limits, Outbox, enforce

PAD = "x" * 900  # about 1 kB per event, so a megabyte is ~1,000 events

KINDS = {Lane.HOLD: "quality.hold_raised", Lane.BUSINESS: "production.confirmed",
         Lane.TELEMETRY: "telemetry"}


def big(n: int, lane: Lane) -> Event:
    return Event(id=f"{lane.label}-{n}", type=KINDS[lane], source="floorlink://s/a/press-1",
                 subject="press-1", time=float(n), lane=lane, sequence=n, epoch=1,
                 data={"n": n, "pad": PAD})


async def fill(box: Outbox, lane: Lane, count: int, start: int = 0) -> None:
    for first in range(start, start + count, 200):
        await box.commit([big(n, lane) for n in range(first, min(first + 200, start + count))],
                         {})


async def ids(box: Outbox, lane: Lane) -> list[str]:
    return [e.id for e in await box.fetch(lane, 0, 1_000_000)]


async def test_old_telemetry_is_dropped_and_counted_business_is_kept(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "b.db", ["u1"], limits=Limits(telemetry_age=3600))
    try:
        await fill(box, Lane.TELEMETRY, 300)
        await fill(box, Lane.BUSINESS, 50)
        assert (await enforce(box, ["u1"])).deleted_rows == 0  # all young
        result = await enforce(box, ["u1"], now=time.time() + 3601)
        assert result.dropped == {"u1": {"telemetry": 300}}
        assert await ids(box, Lane.TELEMETRY) == []
        assert len(await ids(box, Lane.BUSINESS)) == 50
        assert (await box.stats()).drops == {"u1": {"telemetry": 300}}
    finally:
        await box.close()


async def test_the_soft_limit_drops_the_oldest_telemetry_only(tmp_path: Path) -> None:
    limits = Limits(size_bytes=1_000_000, hard_bytes=3_000_000)
    box = await Outbox.open(tmp_path / "b.db", ["u1"], limits=limits)
    try:
        await fill(box, Lane.TELEMETRY, 1500)
        await fill(box, Lane.BUSINESS, 400)
        await fill(box, Lane.HOLD, 20)
        assert await box.used_bytes() > limits.size_bytes
        result = await enforce(box, ["u1"])
        assert await box.used_bytes() <= limits.size_bytes
        kept = await ids(box, Lane.TELEMETRY)
        dropped = result.dropped["u1"]["telemetry"]
        assert set(result.dropped["u1"]) == {"telemetry"}
        assert len(kept) + dropped == 1500
        assert kept == [f"telemetry-{n}" for n in range(dropped, 1500)]  # oldest went first
        assert len(await ids(box, Lane.BUSINESS)) == 400
        assert len(await ids(box, Lane.HOLD)) == 20
        # 1 MB of a 3 MB hard limit: no fill warning yet, but the drop is an alarm.
        [alarm] = await box.alarms()
        assert (alarm.key, alarm.severity) == ("buffer.dropped", "warning")
        assert f"0 hold, 0 business, {dropped} telemetry" in alarm.message
        assert "the soft limit (1 MB)" in alarm.message
        await enforce(box, ["u1"])
        assert [a.key for a in await box.alarms()] == ["buffer.dropped"]  # stays ...
        assert await box.clear_alarm("buffer.dropped") == 1  # ... until acknowledged
    finally:
        await box.close()


async def test_a_dead_uplinks_backlog_waits_for_the_hard_limit(tmp_path: Path) -> None:
    """docs/buffer.md: the soft limit trims telemetry only while every uplink delivers; a
    dead uplink's backlog, telemetry included, is kept up to the hard limit."""
    limits = Limits(size_bytes=1_000_000, hard_bytes=3_000_000)
    box = await Outbox.open(tmp_path / "b.db", ["u1"], limits=limits)
    try:
        await fill(box, Lane.TELEMETRY, 1600)
        assert 2 * limits.size_bytes < await box.used_bytes() < limits.hard_bytes
        result = await enforce(box, [])  # its only uplink is down
        assert result.dropped == {}
        assert len(await ids(box, Lane.TELEMETRY)) == 1600
        assert "buffer.dropped" not in [a.key for a in await box.alarms()]
        added = 1600
        while await box.used_bytes() <= limits.hard_bytes:  # past the hard limit
            await fill(box, Lane.TELEMETRY, 50, start=added)
            added += 50
        result = await enforce(box, [])
        assert await box.used_bytes() <= limits.hard_bytes
        lost = result.dropped["u1"]["telemetry"]
        assert lost > 0
        alarms = {a.key: a for a in await box.alarms()}
        assert f"{lost} telemetry" in alarms["buffer.dropped"].message
        assert "the hard limit (3 MB)" in alarms["buffer.dropped"].message
    finally:
        await box.close()


async def test_at_the_hard_limit_a_dead_uplink_loses_only_its_own_backlog(
        tmp_path: Path) -> None:
    limits = Limits(size_bytes=1_000_000, hard_bytes=1_000_000)
    box = await Outbox.open(tmp_path / "b.db", ["live", "dead"])
    try:
        await fill(box, Lane.BUSINESS, 1500)
        box.limits = limits  # as after a restart with lower limits than the data it holds
        await fill(box, Lane.HOLD, 30)
        # The live uplink has everything but the newest 300 business events in flight.
        acknowledged = (await box.fetch(Lane.BUSINESS, 0, 1200))[-1].position
        holds = (await box.fetch(Lane.HOLD, 0, 100))[-1].position
        await box.advance("live", {Lane.BUSINESS: acknowledged, Lane.HOLD: holds})
        result = await enforce(box, ["live"])
        assert await box.used_bytes() <= limits.hard_bytes
        assert "live" not in result.dropped  # not one event the live uplink needs
        lost = result.dropped["dead"]["business"]
        assert 0 < lost <= 1200
        remaining = await box.fetch(Lane.BUSINESS, 0, 10_000)
        assert [e.id for e in remaining] == [f"business-{n}" for n in range(lost, 1500)]
        assert [e.id for e in remaining if e.position > acknowledged] == [
            f"business-{n}" for n in range(1200, 1500)]
        assert len(await ids(box, Lane.HOLD)) == 30  # holds go last, not needed here
        alarms = {a.key: a for a in await box.alarms()}
        assert alarms["buffer.hard_limit"].severity == "critical"
        assert f"dead: {lost} business" in alarms["buffer.hard_limit"].message
        stats = await box.stats()
        assert stats.drops == {"dead": {"business": lost}}
        assert stats.fill is not None
        assert stats.fill <= 1.0
    finally:
        await box.close()


async def test_at_the_hard_limit_a_healthy_uplink_keeps_even_its_telemetry(
        tmp_path: Path) -> None:
    # The live uplink delivered every business event but is still catching up on
    # telemetry; the dead one has nothing. Telemetry usually goes first, yet here the
    # dead uplink's business backlog goes before anything the live one still needs.
    box = await Outbox.open(tmp_path / "b.db", ["live", "dead"])
    try:
        await fill(box, Lane.TELEMETRY, 300)
        await fill(box, Lane.BUSINESS, 1200)
        await box.advance("live", {Lane.BUSINESS: 10**9})
        box.limits = Limits(size_bytes=1_000_000, hard_bytes=1_000_000)
        result = await enforce(box, ["live"])
        assert "live" not in result.dropped
        assert len(await ids(box, Lane.TELEMETRY)) == 300
        assert result.dropped["dead"]["business"] > 0
        # The same limits with the live uplink down: now telemetry goes first.
        await fill(box, Lane.BUSINESS, 400, start=5000)
        result = await enforce(box, [])
        assert result.dropped["live"] == {"telemetry": 300}
    finally:
        await box.close()


async def test_with_no_healthy_uplink_the_oldest_business_events_go_holds_last(
        tmp_path: Path) -> None:
    limits = Limits(size_bytes=600_000, hard_bytes=1_000_000)
    box = await Outbox.open(tmp_path / "b.db", ["u1"])
    try:
        await fill(box, Lane.HOLD, 50)
        await fill(box, Lane.TELEMETRY, 300)
        await fill(box, Lane.BUSINESS, 1300)
        box.limits = limits
        result = await enforce(box, [])
        assert result.dropped["u1"]["telemetry"] == 300
        assert result.dropped["u1"]["business"] > 0
        assert "hold" not in result.dropped["u1"]
        assert len(await ids(box, Lane.HOLD)) == 50
    finally:
        await box.close()


async def test_fill_warnings_at_80_and_95_percent_and_cleared_below(tmp_path: Path) -> None:
    limits = Limits(size_bytes=2_000_000, hard_bytes=2_000_000)
    box = await Outbox.open(tmp_path / "b.db", ["u1"], limits=limits)
    try:
        async def alarm() -> str | None:
            found = {a.key: a for a in await box.alarms()}.get("buffer.fill")
            return found.severity if found else None

        await fill(box, Lane.BUSINESS, 1000)
        await enforce(box, ["u1"])
        assert await alarm() is None
        while await box.used_bytes() < 0.82 * limits.hard_bytes:
            await fill(box, Lane.BUSINESS, 50, start=10_000 + await box.used_bytes())
        await enforce(box, ["u1"])
        assert await alarm() == "warning"
        while await box.used_bytes() < 0.96 * limits.hard_bytes:
            await fill(box, Lane.BUSINESS, 50, start=10_000 + await box.used_bytes())
        await enforce(box, ["u1"])
        assert await alarm() == "critical"
        await box.advance("u1", {Lane.BUSINESS: 10**9})
        await box.prune()
        await enforce(box, ["u1"])
        assert await alarm() is None
    finally:
        await box.close()


async def test_a_full_disk_refuses_the_write_whole_and_it_succeeds_once_space_is_freed(
        tmp_path: Path) -> None:
    # The hard limit sets SQLite's max_page_count: writing past it fails exactly like
    # a full disk (SQLITE_FULL), which is what this test needs.
    limits = Limits(size_bytes=1_000_000, hard_bytes=1_000_000)
    box = await Outbox.open(tmp_path / "b.db", ["u1"], limits=limits)
    try:
        await fill(box, Lane.TELEMETRY, 600)
        committed = 0

        async def next_batch() -> None:
            await box.commit([big(n, Lane.BUSINESS) for n in range(committed, committed + 100)],
                             {"press-1": f'{{"n": {committed}}}'})

        refusal: BufferError | None = None
        for _ in range(50):
            try:
                await next_batch()
            except BufferError as exc:
                refusal = exc
                break
            committed += 100
        assert refusal is not None, "the ceiling never refused a write"
        assert "no space to write" in str(refusal)
        assert "Nothing committed was lost" in str(refusal)
        assert box.pressure.is_set()  # the agent's maintenance wakes on this
        assert len(await ids(box, Lane.BUSINESS)) == committed  # the failed batch: none of it
        assert await box.load_states() == {"press-1": f'{{"n": {committed - 100}}}'}
        await enforce(box, ["u1"])  # frees telemetry first
        await box.commit([big(n, Lane.BUSINESS) for n in range(committed, committed + 100)],
                         {"press-1": "{}"})
        assert len(await ids(box, Lane.BUSINESS)) == committed + 100
    finally:
        await box.close()
    with sqlite3.connect(tmp_path / "b.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def history_rows(box: Outbox) -> list[tuple[float, str]]:
    return [(float(r[0]), str(r[1])) for r in await box.read(
        "SELECT start, asset FROM history ORDER BY start")]


async def add_history(box: Outbox, asset: str, start: float, end: float | None,
                      count: int = 1, pad: str = "") -> None:
    async with box.transaction() as db:
        await db.executemany(
            "INSERT INTO history (asset, kind, start, end, state, reason) VALUES "
            "(?, 'state', ?, ?, 'down', ?)",
            [(asset, start + n, None if end is None else end + n, pad) for n in range(count)])


async def test_the_shift_history_is_trimmed_past_its_age_and_first_under_pressure(
        tmp_path: Path) -> None:
    """Past 8 days it goes; under the hard limit it goes (down to the last two days) after
    raw telemetry and before any business event: only the pictures lose detail."""
    now = time.time()
    box = await Outbox.open(tmp_path / "b.db", ["u1"])
    try:
        await add_history(box, "old", now - 9 * 86400, now - 9 * 86400 + 60)
        await add_history(box, "open", now - 9 * 86400, None)  # an open segment stays
        await add_history(box, "recent", now - 3600, now - 60)
        await enforce(box, ["u1"], now=now)
        assert [asset for _, asset in await history_rows(box)] == ["open", "recent"]
        await add_history(box, "bulky", now - 3 * 86400, now - 3 * 86400 + 60, count=300,
                          pad="x" * 5000)
        await fill(box, Lane.BUSINESS, 40)
        box.limits = Limits(hard_bytes=1_000_000)
        result = await enforce(box, [], now=now)
        assert "business" not in result.dropped.get("u1", {})
        assert len(await ids(box, Lane.BUSINESS)) == 40
        assert [asset for _, asset in await history_rows(box)] == ["open", "recent"]
    finally:
        await box.close()
