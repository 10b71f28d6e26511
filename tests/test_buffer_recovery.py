"""Start-up on a damaged or old buffer file, on real SQLite files: corruption is
moved aside and salvaged into a new epoch, old schemas are migrated after a backup."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from test_buffer import event

from agent.errors import BufferError
from agent.events import Lane
from buffer import SCHEMA_VERSION, Outbox

FIXTURES = Path(__file__).parent / "fixtures"


async def filled(path: Path, count: int) -> tuple[int, dict[str, str]]:
    box = await Outbox.open(path, ["u1"])
    epoch = box.epoch
    for start in range(0, count, 500):
        await box.commit([event(n) for n in range(start, min(start + 500, count))],
                         {"press-1": json.dumps({"n": start})})
    await box.advance("u1", {Lane.BUSINESS: 10})
    bodies = {e.id: e.body for e in await box.fetch(Lane.BUSINESS, 0, count)}
    await box.close()  # the last connection checkpoints the WAL into the file
    return epoch, bodies


def damage(path: Path, pages: range) -> None:
    """Overwrite whole pages in the middle of the file, as a failing disk would."""
    with open(path, "r+b") as handle:
        for page in pages:
            handle.seek(page * 4096)
            handle.write(os.urandom(4096))


async def test_a_corrupt_file_is_moved_aside_and_its_readable_rows_salvaged(
        tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    old_epoch, bodies = await filled(path, 3000)
    pages = path.stat().st_size // 4096
    damage(path, range(pages // 2, pages // 2 + 3))

    box = await Outbox.open(path, ["u1"])
    try:
        assert box.salvage is not None
        moved = box.salvage.moved_to
        assert moved.exists()
        assert moved.name.startswith("buffer.db.corrupt-")
        assert box.epoch != old_epoch  # sequences may restart; consumers can tell
        salvaged = await box.fetch(Lane.BUSINESS, 0, 10_000)
        # Most rows survive three bad pages; every survivor is byte-for-byte the original.
        assert 2000 < len(salvaged) < 3000
        assert all(bodies[e.id] == e.body for e in salvaged)
        assert box.salvage.rows["events"] == len(salvaged)
        assert box.salvage.rows["cursors"] == 1
        assert (await box.cursors("u1"))[Lane.BUSINESS] == 10
        alarms = {a.key: a for a in await box.alarms()}
        alarm = alarms["buffer.recovered"]
        assert alarm.severity == "critical"
        assert str(moved) in alarm.message
        assert f"{len(salvaged)} events" in alarm.message
        # The fresh buffer works like any other.
        await box.commit([event(99_999)], {})
    finally:
        await box.close()
    # No crash loop and no second recovery: the next start finds a healthy file,
    # and the alarm stays until someone acknowledges it.
    again = await Outbox.open(path, ["u1"])
    assert again.salvage is None
    assert [a.key for a in await again.alarms()] == ["buffer.recovered"]
    assert await again.clear_alarm("buffer.recovered") == 1
    await again.close()


async def test_a_file_that_is_no_database_at_all_is_kept_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    box = await Outbox.open(path, [])
    try:
        assert box.salvage is not None
        assert box.salvage.moved_to.read_bytes() == garbage  # nothing deleted
        assert sum(box.salvage.rows.values()) == 0
        assert "not a database" in box.salvage.problem
        assert [a.key for a in await box.alarms()] == ["buffer.recovered"]
    finally:
        await box.close()


def make_schema1_buffer(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript((FIXTURES / "buffer_schema_v1.sql").read_text())
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"),
                                                      ("epoch", "1700000000000")])
    rows = [(event(n).id, int(event(n).lane), "press-1", event(n).type, event(n).to_json(),
             time.time()) for n in range(1, 6)]
    db.executemany("INSERT INTO events (id, lane, subject, type, body, committed_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", rows)
    hold = event(7, Lane.HOLD)
    held = hold.to_json().replace("machine.state_changed", "quality.hold_raised")
    db.execute("INSERT INTO dead_letters VALUES ('u1', 'e7', 7, 'refused', ?, ?)",
               (time.time(), held))
    db.execute("INSERT INTO cursors VALUES ('u1', 1, 2)")
    db.execute("INSERT INTO asset_state VALUES ('press-1', '{\"v\": 1}', 0)")
    db.close()


async def test_a_schema_1_buffer_is_backed_up_then_migrated_keeping_everything(
        tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    make_schema1_buffer(path)
    box = await Outbox.open(path, ["u1"])
    try:
        assert box.migrated_from == 1
        assert box.epoch == 1700000000000  # same buffer, same epoch
        backup = box.migration_backup
        assert backup is not None
        assert backup.exists()
        with sqlite3.connect(backup) as old:
            assert old.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                               ).fetchone() == ("1",)
            assert old.execute("SELECT COUNT(*) FROM events").fetchone() == (5,)
        assert [e.id for e in await box.fetch(Lane.BUSINESS, 2, 10)] == ["e3", "e4", "e5"]
        assert await box.load_states() == {"press-1": '{"v": 1}'}
        [letter] = await box.dead_letters("u1")
        assert (letter.lane, letter.attempts, letter.status) == (Lane.HOLD, 1, "dead")
        assert letter.type.endswith("quality.hold_raised.v1")
        assert await box.request_replay(None, "u1") == 1  # schema-2 features work on it
    finally:
        await box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                          ).fetchone() == (str(SCHEMA_VERSION),)
    reopened = await Outbox.open(path, ["u1"])
    assert reopened.migrated_from is None  # once only
    await reopened.close()


async def test_a_buffer_from_a_newer_floorlink_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    make_schema1_buffer(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = path.read_bytes()
    with pytest.raises(BufferError, match=r"newer floorlink \(schema 99\).*upgrade floorlink"):
        await Outbox.open(path, [])
    assert path.read_bytes() == before
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".bak")]
