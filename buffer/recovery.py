"""Corruption at start-up: check, move aside, salvage, start a new epoch.

A crash-looping gateway is the worst outcome, and deleting a plant's backlog
silently the second worst. So a file that fails `PRAGMA quick_check` (or is
no database at all) is renamed to `<buffer>.corrupt-<UTC time>` with its WAL,
never deleted; every row that can still be read is copied into a fresh buffer;
and the report of what happened becomes a persistent alarm.

Rows are read in position order in chunks. When a chunk hits a damaged page,
the reader falls back to one row at a time until it is past the damage, so a
few bad pages cost only the rows they held.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .migrate import stamp

CHUNK = 500
SIDE_FILES = ("-wal", "-shm")


@dataclass
class Salvage:
    problem: str
    moved_to: Path
    rows: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        kept = ", ".join(f"{n} {table}" for table, n in self.rows.items() if n) or "nothing"
        lost = ", ".join(f"{n} {table}" for table, n in self.unreadable.items() if n)
        text = (f"the buffer was corrupt ({self.problem}); it was moved to {self.moved_to} "
                f"and a new buffer (new epoch) started. Salvaged: {kept}.")
        if lost:
            text += f" Unreadable, at most: {lost}."
        return text


def problem_with(path: Path) -> str | None:
    """None if the file is a healthy SQLite database, else what is wrong with it."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        rows = db.execute("PRAGMA quick_check").fetchall()
        verdict = [str(row[0]) for row in rows]
        if verdict != ["ok"]:
            return "; ".join(verdict[:3]) + (f" (+{len(verdict) - 3} more)" if len(verdict) > 3
                                             else "")
        return None
    except sqlite3.DatabaseError as exc:
        # "file is not a database", "database disk image is malformed", ...
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        return str(exc)
    finally:
        db.close()


def move_aside(path: Path) -> Path:
    target = path.with_name(f"{path.name}.corrupt-{stamp()}")
    os.rename(path, target)
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    return target


# table -> (key column, columns copied); the fresh buffer's own meta (epoch) is kept.
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "events": ("position", ("position", "id", "lane", "subject", "type", "body",
                            "committed_at")),
    "asset_state": ("rowid", ("asset", "state", "updated_at")),
    "telemetry_memory": ("rowid", ("owner", "bucket", "memories")),
    "cursors": ("rowid", ("uplink", "lane", "position")),
    "dead_letters": ("rowid", ("uplink", "event_id", "position", "reason", "at", "body")),
    "drops": ("rowid", ("uplink", "class", "count", "last_at")),
}


def salvage_into(source: Path, target: sqlite3.Connection, problem: str) -> Salvage:
    """Copy every readable row of `source` into the fresh buffer `target`."""
    report = Salvage(problem=problem, moved_to=source)
    try:
        old = sqlite3.connect(source, isolation_level=None)  # our renamed copy
    except sqlite3.Error:
        return report
    try:
        for table, (key, columns) in TABLES.items():
            copied = unreadable = 0
            target.execute("BEGIN IMMEDIATE")
            try:
                insert = (f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                          f"VALUES ({', '.join('?' * len(columns))})")
                for rows, lost in _readable_rows(old, table, key, columns):
                    unreadable += lost
                    if rows:
                        target.executemany(insert, rows)
                        copied += len(rows)
                target.execute("COMMIT")
            except BaseException:
                target.execute("ROLLBACK")
                raise
            report.rows[table] = copied
            report.unreadable[table] = unreadable
    finally:
        old.close()
    return report


def _readable_rows(db: sqlite3.Connection, table: str, key: str,
                   columns: tuple[str, ...]) -> Iterator[tuple[list[tuple[object, ...]], int]]:
    """Yield (rows, count of rows skipped as unreadable) in key order."""
    select = f"SELECT {key}, {', '.join(columns)} FROM {table}"
    try:
        highest = db.execute(f"SELECT MAX({key}) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        highest = None
    if highest is None:
        highest = _sequence_hint(db, table)
    last = 0
    while True:
        try:
            rows = db.execute(f"{select} WHERE {key} > ? ORDER BY {key} LIMIT ?",
                              (last, CHUNK)).fetchall()
        except sqlite3.DatabaseError:
            rows = None
        if rows is not None:
            if not rows:
                return
            last = int(rows[-1][0])
            yield [tuple(row[1:]) for row in rows], 0
            continue
        # Damage ahead: step one key at a time through the next chunk's range.
        if highest is None or last >= highest:
            return
        good: list[tuple[object, ...]] = []
        lost = 0
        end = min(last + CHUNK, int(highest))
        for probe in range(last + 1, end + 1):
            try:
                row = db.execute(f"{select} WHERE {key} = ?", (probe,)).fetchone()
            except sqlite3.DatabaseError:
                lost += 1
                continue
            if row is not None:
                good.append(tuple(row[1:]))
        last = end
        yield good, lost


def _sequence_hint(db: sqlite3.Connection, table: str) -> int | None:
    """AUTOINCREMENT's high-water mark lives on another page; it bounds the probing."""
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    except sqlite3.DatabaseError:
        return None
    return int(row[0]) if row else None
