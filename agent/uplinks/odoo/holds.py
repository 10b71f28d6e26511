"""Quality holds, made idempotent in both directions.

A hold is a To-Do activity on the lot, created by `load()` under the hold's
external id. Releasing it marks the activity done, and Odoo then *deletes* the
activity and its external id. So:

* a release that finds no activity any more has already happened;
* a raise replayed after its release must not be sent: `load()` would find no
  external id and open the hold again. Released holds are remembered here, in a
  small SQLite file beside the buffer, across restarts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from .lookups import Lookups
from .rpc import OdooClient, OdooRefused


class ReleasedHolds:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: set[str] = set()

    async def open(self) -> None:
        self._known = await asyncio.to_thread(self._load)

    def __contains__(self, hold_id: object) -> bool:
        return hold_id in self._known

    async def add(self, hold_id: str) -> None:
        if hold_id not in self._known:
            await asyncio.to_thread(self._insert, hold_id)
            self._known.add(hold_id)

    def _load(self) -> set[str]:
        """Create the file on first use (once, at start) and read what it knows."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS released_holds "
                       "(hold_id TEXT PRIMARY KEY, released_at REAL NOT NULL)")
            return {str(row[0]) for row in db.execute("SELECT hold_id FROM released_holds")}
        finally:
            db.close()

    def _insert(self, hold_id: str) -> None:
        db = sqlite3.connect(self.path)
        try:
            with db:
                db.execute("INSERT OR IGNORE INTO released_holds VALUES (?, ?)",
                           (hold_id, time.time()))
        finally:
            db.close()


async def release_activity(client: OdooClient, lookups: Lookups, xmlid: str,
                           feedback: str) -> str:
    """Mark the hold's activity done; an activity already gone counts as done."""
    found = await lookups.external_id(xmlid)
    if found is None:
        return "already released (no activity left)"
    try:
        await client.call("mail.activity", "action_feedback", [found[1]], feedback=feedback)
    except OdooRefused as exc:
        if exc.answer and "MissingError" in exc.answer:
            return "already released (activity deleted meanwhile)"
        raise
    return "released"
