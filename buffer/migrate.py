"""Schema versions: create a fresh buffer, or bring an older one up to date.

Before any migration the file is copied with SQLite's online backup (a
consistent copy, WAL included) to `<buffer>.schema<N>-<UTC time>.bak`, so a
failed or regretted upgrade can always be undone by hand. Each step runs in
one transaction together with the version bump: it applies fully or not at all.
"""

from __future__ import annotations

import sqlite3
import time
from importlib import resources
from pathlib import Path

SCHEMA_VERSION = 5


class SchemaTooNew(Exception):
    def __init__(self, found: int) -> None:
        self.found = found
        super().__init__(found)


def stamp() -> str:
    """A UTC timestamp for file names: sorts by time, no characters a shell dislikes."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def schema_version(db: sqlite3.Connection) -> int:
    """0 for an empty file, else the version recorded in meta."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def create(db: sqlite3.Connection, epoch: int) -> None:
    script = resources.files("buffer").joinpath("schema.sql").read_text("utf-8")
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(script):
            db.execute(statement)
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                       [("schema_version", str(SCHEMA_VERSION)), ("epoch", str(epoch))])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def upgrade(db: sqlite3.Connection, path: Path) -> tuple[int, Path] | None:
    """Migrate to SCHEMA_VERSION. Return (the version found, the backup) if anything ran."""
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(found)
    if found == SCHEMA_VERSION:
        return None
    backup = path.with_name(f"{path.name}.schema{found}-{stamp()}.bak")
    with sqlite3.connect(backup) as copy:
        db.backup(copy)
    copy.close()
    for version in range(found + 1, SCHEMA_VERSION + 1):
        script = resources.files("buffer").joinpath(f"migrations/{version:04d}.sql")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script.read_text("utf-8")):
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(version),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return found, backup


def _statements(script: str) -> list[str]:
    """Split a script into statements; executescript() would commit on its own."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(lines)
    statements: list[str] = []
    current = ""
    for piece in text.split(";"):
        current += piece
        if sqlite3.complete_statement(current + ";"):
            if current.strip():
                statements.append(current.strip())
            current = ""
        else:
            current += ";"
    return statements
