"""Derivation states as stored: a document per asset or device, a row per telemetry memory.

A state's telemetry memories (a tag's last value and what was last published of it) were
part of its document, and a device with 2,500 tags made a document of about 500 kB,
written again in every commit where one tag moved. Each memory is now a row of its own
(`telemetry_memory`), written only when it changed, and the document keeps the rest.
Readers get the whole document back (`merged`), so a state reads as it always did.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

# The document's key for its memories: {"telemetry": {tag: memory, ...}, ...}.
TELEMETRY = "telemetry"

# Per row, a state's document (its key, NULL, the JSON) or one of its memories (the
# state's key, the tag, the memory's JSON): read in one SELECT, they are one moment.
STATE_ROWS = ("SELECT asset, NULL, state FROM asset_state "
              "UNION ALL SELECT owner, tag, memory FROM telemetry_memory")
UPSERT_MEMORY = ("INSERT INTO telemetry_memory (owner, tag, memory) VALUES (?, ?, ?) "
                 "ON CONFLICT(owner, tag) DO UPDATE SET memory = excluded.memory")


def from_rows(rows: Iterable[Iterable[object]]) -> dict[str, str]:
    """The documents, merged, from rows of STATE_ROWS."""
    documents: dict[str, str] = {}
    memories: list[tuple[str, str, str]] = []
    for key, tag, text in rows:
        if tag is None:
            documents[str(key)] = str(text)
        else:
            memories.append((str(key), str(tag), str(text)))
    return merged(documents, memories)


def merged(documents: dict[str, str], memories: Iterable[tuple[str, str, str]]
           ) -> dict[str, str]:
    """The documents with their memories in them again. A document with no memory rows
    is returned as it was stored. The standard library's json reads and writes them:
    a memory may hold NaN or an infinity, which it keeps (derive/state.py)."""
    by_owner: dict[str, dict[str, object]] = {}
    for owner, tag, memory in memories:
        by_owner.setdefault(owner, {})[tag] = json.loads(memory)
    result = dict(documents)
    for owner, found in by_owner.items():
        if owner not in documents:
            continue  # a memory whose document is gone belongs to nothing
        document = json.loads(documents[owner])
        document[TELEMETRY] = {**(document.get(TELEMETRY) or {}), **found}
        result[owner] = json.dumps(document, separators=(",", ":"))
    return result


def normalize(db: sqlite3.Connection) -> int:
    """Move memories still inside documents (written before schema 5, or salvaged from
    such a file) into rows, in one transaction; a row already there is newer and stays.
    Returns how many documents it rewrote."""
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute("SELECT asset, state FROM asset_state WHERE instr(state, ?) > 0",
                          (f'"{TELEMETRY}"',)).fetchall()
        rewritten = 0
        for owner, text in rows:
            try:
                document = json.loads(text)
            except ValueError:
                continue  # not for this step to judge: the reader reports it
            inline = document.pop(TELEMETRY, None) if isinstance(document, dict) else None
            if not isinstance(inline, dict):
                continue
            db.executemany(
                "INSERT OR IGNORE INTO telemetry_memory (owner, tag, memory) VALUES (?, ?, ?)",
                [(owner, tag, json.dumps(memory, separators=(",", ":")))
                 for tag, memory in inline.items()])
            db.execute("UPDATE asset_state SET state = ? WHERE asset = ?",
                       (json.dumps(document, separators=(",", ":")), owner))
            rewritten += 1
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return rewritten
