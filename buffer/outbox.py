"""Transactional outbox on SQLite (WAL).

Derivation state and the events it produced commit in ONE transaction, so a
crash at any instant leaves them consistent. Each uplink keeps a cursor per
lane; an event leaves the buffer only when every configured uplink has
acknowledged it (or retention had to drop it, which is counted and alarmed).

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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite

from agent.errors import BufferError, BufferFull

from . import history
from .opening import NotUsable, Prepared, prepare
from .recovery import Salvage
from .retention import RAISE_ALARM, Limits, count_drops
from .space import Reserve
from .states import STATE_ROWS, UPSERT_MEMORIES, from_rows

LANES = (0, 1, 2)
LANE_CLASSES = {0: "hold", 1: "business", 2: "telemetry"}
NO_UPLINK = "-"  # drop counts when no uplink is configured


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

    @property
    def time(self) -> float: ...  # epoch seconds

    @property
    def data(self) -> dict[str, Any]: ...

    def to_json(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    id: str
    lane: int
    subject: str
    type: str
    body: str


@dataclass(frozen=True)
class DeadLetter:
    uplink: str
    event_id: str
    type: str
    subject: str
    lane: int
    reason: str
    answer: str | None
    attempts: int
    status: str
    at: float
    body: str

    def as_event(self, position: int = 0) -> StoredEvent:
        return StoredEvent(position, self.event_id, self.lane, self.subject, self.type, self.body)


@dataclass(frozen=True)
class Alarm:
    key: str
    severity: str
    message: str
    raised_at: float


@dataclass
class BufferStats:
    path: str
    epoch: int
    file_bytes: int
    used_bytes: int
    events: int
    limits: dict[str, float] = field(default_factory=dict)
    fill: float | None = None  # used / hard limit
    backlog: dict[str, dict[int, int]] = field(default_factory=dict)  # uplink -> lane -> count
    dead_letters: dict[str, int] = field(default_factory=dict)
    replays_queued: dict[str, int] = field(default_factory=dict)
    oldest_pending_at: dict[str, float | None] = field(default_factory=dict)
    drops: dict[str, dict[str, int]] = field(default_factory=dict)  # uplink -> class -> count
    alarms: list[Alarm] = field(default_factory=list)
    # uplink -> what the upstream does not have yet, by event type (see stats.py)
    impact: dict[str, dict[str, Any]] = field(default_factory=dict)


# What the write-ahead log keeps of its file after a checkpoint; SQLite checkpoints on
# its own at 1,000 pages (4 MB), so the log seldom holds more.
WAL_SIZE_LIMIT = 4 * 1024 * 1024


class Outbox:
    def __init__(self, db: aiosqlite.Connection, path: Path, prepared: Prepared,
                 uplinks: Sequence[str], limits: Limits) -> None:
        self._db = db
        self.path = path
        self.epoch = prepared.epoch
        self.salvage: Salvage | None = prepared.salvage
        self.migrated_from = prepared.migrated_from
        self.migration_backup = prepared.backup
        self.uplinks = tuple(uplinks)
        self.limits = limits
        self.page_size = 4096
        self._lock = asyncio.Lock()
        self.impact_cache: tuple[float, dict[str, dict[str, Any]]] | None = None  # stats.py
        self._listeners: list[Callable[[], None]] = []
        self.pressure = asyncio.Event()  # set when a write failed for lack of space
        self.reserve = Reserve(path.with_name(path.name + ".reserve"), limits.reserve_bytes)

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, path: Path, uplinks: Sequence[str],
                   synchronous: Literal["full", "normal"] = "full",
                   limits: Limits | None = None) -> Outbox:
        limits = limits or Limits()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BufferError(
                f"cannot create the buffer directory {path.parent}: {exc.strerror}; "
                "set buffer.path to a writable place (the systemd unit uses /var/lib/floorlink)"
            ) from exc
        try:
            prepared = await asyncio.to_thread(prepare, path)
        except NotUsable as exc:
            raise BufferError(str(exc)) from exc
        except (sqlite3.Error, OSError) as exc:
            raise BufferError(f"cannot prepare the buffer {path}: {exc}; check that the "
                              "directory is writable and the disk has space") from exc
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise BufferError(f"cannot open the buffer {path}: {exc}") from exc
        outbox = cls(db, path, prepared, uplinks, limits)
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            row = await (await db.execute("PRAGMA page_size")).fetchone()
            outbox.page_size = int(row[0]) if row else 4096
            # After a checkpoint, the log goes back to this size: an outage's worth of
            # log does not keep its disk space for ever.
            await db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            if limits.hard_bytes:
                # A ceiling SQLite itself enforces: the file cannot outgrow the hard limit
                # by more than a margin even if retention falls behind.
                ceiling = int(limits.hard_bytes * 1.1) // outbox.page_size + 64
                await db.execute(f"PRAGMA max_page_count = {ceiling}")
        except sqlite3.Error as exc:
            await db.close()
            raise BufferError(f"cannot prepare the buffer {path}: {exc}") from exc
        await asyncio.to_thread(outbox.reserve.take)
        return outbox

    async def close(self) -> None:
        async with self._lock:
            await self._db.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside BEGIN IMMEDIATE .. COMMIT, under the writer lock."""
        async with self._lock:
            try:
                try:
                    # BEGIN inside the try: a caller cancelled while BEGIN runs on the
                    # connection's thread must still roll back, or the next BEGIN fails.
                    await self._db.execute("BEGIN IMMEDIATE")
                    yield self._db
                    await self._db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await asyncio.shield(self._db.execute("ROLLBACK"))
                    raise
            except sqlite3.Error as exc:
                error = self._translate(exc)
                raise error from exc

    # ---------------------------------------------------------------- writing

    async def load_states(self) -> dict[str, str]:
        """Each committed state's document, its telemetry memories in it (states.py)."""
        return from_rows(await self._read(STATE_ROWS))

    async def commit(self, events: Sequence[CommittableEvent], states: dict[str, str],
                     shed_telemetry: int = 0,
                     alarms: Sequence[tuple[str, str, str]] = (),
                     marks: Sequence[history.HistoryMark] = (),
                     memories: Sequence[tuple[str, int, str]] = ()) -> None:
        """Store events and the derivation state that produced them, atomically.

        `shed_telemetry` counts telemetry derived but left out for want of space: it is
        counted as dropped, and alarmed, in the same transaction. `alarms` (key, severity,
        message) are raised in it too: they stay until acknowledged. `marks` are the
        shift history's no-data edges (history.py). `memories` (owner, bucket, JSON) are the
        rows of telemetry memories that changed, stored beside the documents (states.py)."""
        now = time.time()
        event_rows = [(e.id, int(e.lane), e.subject, e.type, e.to_json(), now) for e in events]
        state_rows = [(asset, state, now) for asset, state in states.items()]
        async with self.transaction() as db:
            # Each statement is a round trip to the connection's thread (about 80 µs of
            # CPU here, measured), so an empty list sends none: most commits change no
            # document, only memories (states.py).
            if event_rows:
                await db.executemany(
                    "INSERT INTO events (id, lane, subject, type, body, committed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", event_rows)
            if state_rows:
                await db.executemany(
                    "INSERT INTO asset_state (asset, state, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(asset) DO UPDATE SET state = excluded.state, "
                    "updated_at = excluded.updated_at", state_rows)
            if memories:
                await db.executemany(UPSERT_MEMORIES, memories)
            if shed_telemetry:
                await count_drops(db, self.uplinks or ["-"], "telemetry", shed_telemetry,
                                  "the disk was full: telemetry was left out so that business "
                                  "events and derivation state still fit")
            for key, severity, message in alarms:
                await db.execute(RAISE_ALARM, (key, severity, message, now))
            await history.append(db, events)
            await history.append_marks(db, marks)
        if event_rows:
            self._notify()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every commit that stored events, and on replay requests."""
        self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

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
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO cursors (uplink, lane, position) VALUES (?, ?, ?) "
                "ON CONFLICT(uplink, lane) DO UPDATE SET "
                "position = MAX(position, excluded.position)",
                [(uplink, lane, pos) for lane, pos in positions.items()])

    async def dead_letter(self, uplink: str, event: StoredEvent, reason: str,
                          answer: str | None = None, attempts: int = 1) -> None:
        """Keep a refused event with why; a refused replay counts one more attempt."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO dead_letters (uplink, event_id, position, reason, at, body, lane, "
                "subject, type, answer, attempts, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'dead') "
                "ON CONFLICT(uplink, event_id) DO UPDATE SET reason = excluded.reason, "
                "answer = excluded.answer, at = excluded.at, status = 'dead', "
                "attempts = dead_letters.attempts + excluded.attempts",
                (uplink, event.id, event.position, reason, time.time(), event.body, event.lane,
                 event.subject, event.type, answer, attempts))

    async def dead_letters(self, uplink: str | None = None,
                           status: str | None = "dead") -> list[DeadLetter]:
        clauses, params = [], []
        if uplink is not None:
            clauses.append("uplink = ?")
            params.append(uplink)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(
            "SELECT uplink, event_id, type, subject, lane, reason, answer, attempts, status, at, "
            f"body FROM dead_letters {where} ORDER BY at, position", params)
        return [DeadLetter(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]),
                           None if r[6] is None else str(r[6]), int(r[7]), str(r[8]),
                           float(r[9]), str(r[10])) for r in rows]

    async def request_replay(self, event_ids: Sequence[str] | None,
                             uplink: str | None = None) -> int:
        """Queue dead letters for another attempt: the given ids, or all (per uplink)."""
        clauses, params = ["status = 'dead'"], []
        if uplink is not None:
            clauses.append("uplink = ?")
            params.append(uplink)
        if event_ids is not None:
            clauses.append(f"event_id IN ({','.join('?' * len(event_ids))})")
            params.extend(event_ids)
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE dead_letters SET status = 'queued', replay_asked_at = ? "
                f"WHERE {' AND '.join(clauses)}", (time.time(), *params))
            count = max(cursor.rowcount, 0)
        if count:
            self._notify()
        return count

    async def queued_replays(self, uplink: str, limit: int) -> list[StoredEvent]:
        letters = await self._read(
            "SELECT position, event_id, lane, subject, type, body FROM dead_letters "
            "WHERE uplink = ? AND status = 'queued' ORDER BY position LIMIT ?", (uplink, limit))
        return [StoredEvent(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]))
                for r in letters]

    async def replay_delivered(self, uplink: str, event_id: str) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE dead_letters SET status = 'delivered', delivered_at = ? "
                             "WHERE uplink = ? AND event_id = ?", (time.time(), uplink, event_id))

    async def prune(self) -> int:
        """Delete events every configured uplink has acknowledged. Without uplinks, keep all."""
        if not self.uplinks:
            return 0
        removed = 0
        for lane in LANES:
            floor = await self._lane_floor(lane, self.uplinks)
            if floor:
                async with self.transaction() as db:
                    cursor = await db.execute(
                        "DELETE FROM events WHERE lane = ? AND position <= ?", (lane, floor))
                    removed += max(cursor.rowcount, 0)
        return removed

    async def make_room(self) -> None:
        """The disk is full: give back the reserve, and fold the log into the file."""
        await asyncio.to_thread(self.reserve.release)
        await self.checkpoint()

    async def checkpoint(self) -> None:
        """Copy the log into the file and start it over (best effort: on a full disk the
        file may have no room to grow). RESTART, not TRUNCATE: the log file keeps its
        blocks (up to WAL_SIZE_LIMIT), the room the next DELETE on a full disk needs."""
        async with self._lock:
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("PRAGMA wal_checkpoint(RESTART)")

    async def keep_reserve(self) -> None:
        """Take the reserve again once the disk has room for it."""
        if self.limits.reserve_bytes and not self.reserve.held:
            await asyncio.to_thread(self.reserve.take)

    async def _lane_floor(self, lane: int, uplinks: Sequence[str]) -> int:
        """The highest position every one of `uplinks` has acknowledged in `lane`."""
        placeholders = ",".join("?" * len(uplinks))
        rows = await self._read(
            f"SELECT uplink, position FROM cursors WHERE lane = ? AND uplink IN ({placeholders})",
            (lane, *uplinks))
        if len(rows) < len(uplinks):
            return 0  # an uplink that never acknowledged anything holds the whole lane
        return min(int(pos) for _, pos in rows)

    # ---------------------------------------------------------------- alarms, export

    async def raise_alarm(self, key: str, severity: str, message: str) -> None:
        async with self.transaction() as db:
            await db.execute(RAISE_ALARM, (key, severity, message, time.time()))

    async def clear_alarm(self, key: str | None) -> int:
        """Acknowledge one alarm, or all of them with None."""
        async with self.transaction() as db:
            if key is None:
                cursor = await db.execute("DELETE FROM alarms")
            else:
                cursor = await db.execute("DELETE FROM alarms WHERE key = ?", (key,))
            return max(cursor.rowcount, 0)

    async def alarms(self) -> list[Alarm]:
        rows = await self._read("SELECT key, severity, message, raised_at FROM alarms ORDER BY key")
        return [Alarm(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    async def export(self, since: float, batch: int = 1000) -> AsyncIterator[StoredEvent]:
        """Every buffered event committed at or after `since`, in commit order."""
        after = 0
        while True:
            rows = await self._read(
                "SELECT position, id, lane, subject, type, body FROM events "
                "WHERE position > ? AND committed_at >= ? ORDER BY position LIMIT ?",
                (after, since, batch))
            for r in rows:
                yield StoredEvent(int(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]),
                                  str(r[5]))
            if len(rows) < batch:
                return
            after = int(rows[-1][0])

    # ---------------------------------------------------------------- reading for status

    async def used_bytes(self) -> int:
        """Bytes of live pages: unlike the file size, this shrinks when rows are deleted."""
        # One statement, so one round trip (retention asks after every chunk it drops).
        rows = await self._read("SELECT page_count - freelist_count "
                                "FROM pragma_page_count(), pragma_freelist_count()")
        return int(rows[0][0]) * self.page_size

    async def stats(self) -> BufferStats:
        """Figures for the status page (stats.py); the per-type business impact is
        recounted at most every IMPACT_SECONDS."""
        from .stats import collect

        return await collect(self)

    async def read(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, for the figures modules."""
        return await self._read(sql, params)

    # ---------------------------------------------------------------- plumbing

    async def _read(self, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            try:
                # execute_fetchall: one round trip to the connection's thread, where
                # execute() then fetchall() take two.
                rows = await self._db.execute_fetchall(sql, tuple(params))
                return [tuple(row) for row in rows]
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> BufferError:
        text = str(exc)
        if "disk is full" in text:
            self.pressure.set()
            limit = (f" or the buffer reached its ceiling (buffer.limits.hard_size "
                     f"{self.limits.hard_bytes / 1e6:g} MB + 10%)" if self.limits.hard_bytes
                     else "")
            return BufferFull(
                f"no space to write {self.path}: the disk is full{limit}. Nothing committed "
                "was lost; retention frees space, telemetry goes first, and the write is "
                "retried in smaller pieces")
        if "readonly" in text or "read-only" in text:
            return BufferError(f"{self.path} is read-only; the agent needs write access to it")
        return BufferError(f"buffer {self.path}: {text}")


def file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(f"{path}{suffix}")
    return total
