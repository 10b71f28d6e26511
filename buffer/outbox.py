"""Transactional outbox on SQLite (WAL).

Derivation state and the events it produced commit in ONE transaction, so a
crash at any instant leaves them consistent. Each uplink keeps a cursor per
lane; an event leaves the buffer only when every configured uplink has
acknowledged it.

Durability is explicit: `synchronous=FULL` (default) makes every commit reach
the disk before it counts, so power loss loses nothing that was committed.
`NORMAL` is several times faster in WAL mode but may lose the last commits on
power loss (never corrupting the file). Commits are grouped by the writer, so
FULL costs little in practice.

All statements run on one aiosqlite connection, so there is a single writer;
a lock keeps one coroutine's transaction from interleaving with another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite

from agent.errors import BufferError

SCHEMA_VERSION = 1
LANES = (0, 1, 2)


class CommittableEvent(Protocol):
    """What the outbox needs of an event; `agent.events.Event` is one."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def lane(self) -> int: ...

    def to_json(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    id: str
    lane: int
    subject: str
    type: str
    body: str


@dataclass
class BufferStats:
    path: str
    epoch: int
    file_bytes: int
    events: int
    backlog: dict[str, dict[int, int]] = field(default_factory=dict)  # uplink -> lane -> count
    dead_letters: dict[str, int] = field(default_factory=dict)
    oldest_pending_at: dict[str, float | None] = field(default_factory=dict)


class Outbox:
    def __init__(self, db: aiosqlite.Connection, path: Path, epoch: int,
                 uplinks: Sequence[str]) -> None:
        self._db = db
        self.path = path
        self.epoch = epoch
        self._uplinks = tuple(uplinks)
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, path: Path, uplinks: Sequence[str],
                   synchronous: Literal["full", "normal"] = "full") -> Outbox:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BufferError(
                f"cannot create the buffer directory {path.parent}: {exc.strerror}; "
                "set buffer.path to a writable place (the systemd unit uses /var/lib/floorlink)"
            ) from exc
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise BufferError(f"cannot open the buffer {path}: {exc}") from exc
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            mode = await (await db.execute("PRAGMA journal_mode = WAL")).fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise BufferError(f"{path}: the file system does not support WAL mode")
            await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            schema = resources.files("buffer").joinpath("schema.sql").read_text("utf-8")
            await db.executescript(schema)
            epoch = await _ensure_meta(db)
        except sqlite3.Error as exc:
            await db.close()
            raise BufferError(f"cannot prepare the buffer {path}: {exc}") from exc
        return cls(db, path, epoch, uplinks)

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    # ---------------------------------------------------------------- writing

    async def load_states(self) -> dict[str, str]:
        rows = await self._read("SELECT asset, state FROM asset_state")
        return {str(asset): str(state) for asset, state in rows}

    async def commit(self, events: Sequence[CommittableEvent], states: dict[str, str]) -> None:
        """Store events and the derivation state that produced them, atomically."""
        now = time.time()
        event_rows = [(e.id, int(e.lane), e.subject, e.type, e.to_json(), now) for e in events]
        state_rows = [(asset, state, now) for asset, state in states.items()]
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._db.executemany(
                        "INSERT INTO events (id, lane, subject, type, body, committed_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", event_rows)
                    await self._db.executemany(
                        "INSERT INTO asset_state (asset, state, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(asset) DO UPDATE SET state = excluded.state, "
                        "updated_at = excluded.updated_at", state_rows)
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc
        if event_rows:
            for listener in self._listeners:
                listener()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every commit that stored events (forwarders wake on it)."""
        self._listeners.append(callback)

    # ---------------------------------------------------------------- delivery

    async def cursors(self, uplink: str) -> dict[int, int]:
        rows = await self._read("SELECT lane, position FROM cursors WHERE uplink = ?", (uplink,))
        found = {int(lane): int(pos) for lane, pos in rows}
        return {lane: found.get(lane, 0) for lane in LANES}

    async def fetch(self, lane: int, after: int, limit: int) -> list[StoredEvent]:
        rows = await self._read(
            "SELECT position, id, lane, subject, type, body FROM events "
            "WHERE lane = ? AND position > ? ORDER BY position LIMIT ?", (lane, after, limit))
        return [StoredEvent(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]))
                for r in rows]

    async def advance(self, uplink: str, positions: dict[int, int]) -> None:
        """Record that everything up to `positions[lane]` is acknowledged by `uplink`."""
        await self._write_many(
            "INSERT INTO cursors (uplink, lane, position) VALUES (?, ?, ?) "
            "ON CONFLICT(uplink, lane) DO UPDATE SET position = MAX(position, excluded.position)",
            [(uplink, lane, pos) for lane, pos in positions.items()])

    async def dead_letter(self, uplink: str, event: StoredEvent, reason: str) -> None:
        await self._write_many(
            "INSERT OR REPLACE INTO dead_letters (uplink, event_id, position, reason, at, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(uplink, event.id, event.position, reason, time.time(), event.body)])

    async def prune(self) -> int:
        """Delete events every configured uplink has acknowledged. Without uplinks, keep all."""
        if not self._uplinks:
            return 0
        removed = 0
        for lane in LANES:
            placeholders = ",".join("?" * len(self._uplinks))
            rows = await self._read(
                "SELECT uplink, position FROM cursors "
                f"WHERE lane = ? AND uplink IN ({placeholders})",
                (lane, *self._uplinks))
            if len(rows) < len(self._uplinks):
                continue  # an uplink that never acknowledged anything holds the whole lane
            floor = min(int(pos) for _, pos in rows)
            removed += await self._write_many(
                "DELETE FROM events WHERE lane = ? AND position <= ?", [(lane, floor)])
        return removed

    # ---------------------------------------------------------------- reading for status

    async def stats(self) -> BufferStats:
        total = await self._read("SELECT COUNT(*) FROM events")
        result = BufferStats(path=str(self.path), epoch=self.epoch,
                             file_bytes=_file_bytes(self.path), events=int(total[0][0]))
        for uplink in self._uplinks:
            cursors = await self.cursors(uplink)
            per_lane: dict[int, int] = {}
            oldest: float | None = None
            for lane in LANES:
                row = await self._read(
                    "SELECT COUNT(*), MIN(committed_at) FROM events "
                    "WHERE lane = ? AND position > ?",
                    (lane, cursors[lane]))
                per_lane[lane] = int(row[0][0])
                if row[0][1] is not None:
                    oldest = min(oldest, float(row[0][1])) if oldest else float(row[0][1])
            result.backlog[uplink] = per_lane
            result.oldest_pending_at[uplink] = oldest
            dead = await self._read("SELECT COUNT(*) FROM dead_letters WHERE uplink = ?", (uplink,))
            result.dead_letters[uplink] = int(dead[0][0])
        return result

    # ---------------------------------------------------------------- plumbing

    async def _read(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            try:
                cursor = await self._db.execute(sql, tuple(params))
                return [tuple(row) for row in await cursor.fetchall()]
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    async def _write_many(self, sql: str, rows: list[tuple[object, ...]]) -> int:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    cursor = await self._db.executemany(sql, rows)
                    await self._db.execute("COMMIT")
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
                return max(cursor.rowcount, 0)
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc


async def _ensure_meta(db: aiosqlite.Connection) -> int:
    rows = await (await db.execute("SELECT key, value FROM meta")).fetchall()
    meta = {str(k): str(v) for k, v in rows}
    if "schema_version" in meta and int(meta["schema_version"]) > SCHEMA_VERSION:
        raise BufferError(
            f"the buffer was written by a newer floorlink (schema {meta['schema_version']}, "
            f"this one knows {SCHEMA_VERSION}); upgrade floorlink or point buffer.path elsewhere")
    if "epoch" not in meta:
        # A fresh buffer starts a new epoch: sequences restart, and consumers can tell.
        epoch = int(time.time() * 1000)
        await db.execute("BEGIN IMMEDIATE")
        await db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             [("schema_version", str(SCHEMA_VERSION)), ("epoch", str(epoch))])
        await db.execute("COMMIT")
        return epoch
    return int(meta["epoch"])


def _translate(exc: sqlite3.Error, path: Path) -> BufferError:
    text = str(exc)
    if "disk is full" in text or "database or disk is full" in text:
        return BufferError(f"the disk holding {path} is full; free space there. Nothing committed "
                           "was lost and the agent retries")
    if "readonly" in text or "read-only" in text:
        return BufferError(f"{path} is read-only; the agent needs write access to it")
    return BufferError(f"buffer {path}: {text}")


def _file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(f"{path}{suffix}")
    return total
