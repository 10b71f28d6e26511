"""Everything that happens to the file before the agent uses it, synchronously.

Order: check integrity (and recover if corrupt), then create or migrate the
schema. It runs in a worker thread at start-up; a big file's quick_check reads
every page once (about a second per GB on an SSD).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .migrate import SchemaTooNew, create, schema_version, upgrade
from .recovery import Salvage, move_aside, problem_with, salvage_into
from .states import normalize

CORRUPTION_ALARM = "buffer.recovered"


@dataclass(frozen=True)
class Prepared:
    epoch: int
    salvage: Salvage | None = None
    migrated_from: int | None = None
    backup: Path | None = None


class NotUsable(Exception):
    """The file cannot be used; the message says why and what to do."""


def prepare(path: Path) -> Prepared:
    problem = None
    moved: Path | None = None
    if path.exists() and path.stat().st_size > 0:
        problem = problem_with(path)
        if problem is not None:
            moved = move_aside(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise NotUsable(f"{path}: the file system does not support WAL mode; "
                            "put buffer.path on a local disk")
        version = schema_version(db)
        migrated = None
        if version == 0:
            # A fresh buffer starts a new epoch: sequences restart, and consumers can tell.
            epoch = int(time.time() * 1000)
            create(db, epoch)
        else:
            try:
                migrated = upgrade(db, path)
            except SchemaTooNew as exc:
                raise NotUsable(
                    f"the buffer was written by a newer floorlink (schema {exc.found}); "
                    "upgrade floorlink or point buffer.path elsewhere") from exc
            epoch = int(db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])
        salvage = None
        if moved is not None and problem is not None:
            salvage = salvage_into(moved, db, problem)
            db.execute("INSERT OR REPLACE INTO alarms (key, severity, message, raised_at) "
                       "VALUES (?, 'critical', ?, ?)",
                       (CORRUPTION_ALARM, salvage.describe(), time.time()))
        # Memories as rows (states.py). On every open, not only after a migration or a
        # salvage: the migration commits before this does, and a crash between the two
        # would leave memories inside documents for good. A schema-5 document holds
        # none, so this is one small SELECT.
        normalize(db)
        return Prepared(epoch, salvage, migrated[0] if migrated else None,
                        migrated[1] if migrated else None)
    finally:
        db.close()
