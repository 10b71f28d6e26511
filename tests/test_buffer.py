"""The outbox on real SQLite: atomic commits, per-uplink cursors, pruning, reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import BufferError
from agent.events import Event, Lane
from buffer import Outbox


def event(n: int, lane: Lane = Lane.BUSINESS, subject: str = "press-1") -> Event:
    return Event(id=f"e{n}", type="machine.state_changed", source="floorlink://s/a/press-1",
                 subject=subject, time=float(n), lane=lane, sequence=n, epoch=1, data={"n": n})


async def test_commit_fetch_cursor_prune_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    box = await Outbox.open(path, ["u1", "u2"])
    epoch = box.epoch
    await box.commit([event(1), event(2), event(3, Lane.HOLD)], {"press-1": '{"x":1}'})
    assert [e.id for e in await box.fetch(Lane.BUSINESS, 0, 10)] == ["e1", "e2"]
    first = await box.fetch(Lane.BUSINESS, 0, 10)
    await box.advance("u1", {Lane.BUSINESS: first[-1].position})
    assert await box.prune() == 0  # u2 has acknowledged nothing yet
    await box.advance("u2", {Lane.BUSINESS: first[0].position})
    assert await box.prune() == 1
    stats = await box.stats()
    assert stats.backlog["u1"] == {0: 1, 1: 0, 2: 0}
    assert stats.backlog["u2"] == {0: 1, 1: 1, 2: 0}
    await box.close()
    again = await Outbox.open(path, ["u1", "u2"])
    assert again.epoch == epoch  # same buffer, same epoch
    assert await again.load_states() == {"press-1": '{"x":1}'}
    assert (await again.cursors("u2"))[Lane.BUSINESS] == first[0].position
    await again.close()


async def test_a_failed_commit_leaves_nothing_behind(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "b.db", ["u1"])
    await box.commit([event(1)], {})
    with pytest.raises(BufferError):
        await box.commit([event(2), event(1)], {"press-1": "{}"})  # duplicate id: rolled back
    assert [e.id for e in await box.fetch(Lane.BUSINESS, 0, 10)] == ["e1"]
    assert await box.load_states() == {}
    await box.close()


async def test_unusable_location_says_what_to_change(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "plain-file"
    not_a_directory.write_text("")
    with pytest.raises(BufferError, match=r"set buffer\.path to a writable place"):
        await Outbox.open(not_a_directory / "sub" / "b.db", [])


async def test_fresh_buffer_gets_a_new_epoch(tmp_path: Path) -> None:
    one = await Outbox.open(tmp_path / "one.db", [])
    await one.close()
    (tmp_path / "one.db").unlink()
    two = await Outbox.open(tmp_path / "one.db", [])
    assert two.epoch != one.epoch or two.epoch > 0
    await two.close()
