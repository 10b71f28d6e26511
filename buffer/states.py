"""Derivation states as stored: a document per asset or device, and its telemetry memories
spread over rows.

A state's telemetry memories (a tag's last value and what was last published of it) were
part of its document, and a device with 2,500 tags made a document of about 500 kB,
written again in every commit where one tag moved. The memories now live in up to
BUCKETS rows per state (`telemetry_memory`), a tag's row chosen by a hash of its name,
and a commit writes only the rows that hold a memory that changed. A row per memory
would have been smallest for one change, but when every tag moves (a scan of 500
changing values) 500 upserts cost eight times one document; 64 rows cost about what
the document did. Readers get the whole document back (`merged`), so a state reads as
it always did.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import zlib
from collections.abc import Iterable

# The document's key for its memories: {"telemetry": {tag: memory, ...}, ...}.
TELEMETRY = "telemetry"
BUCKETS = 64

log = logging.getLogger("floorlink.buffer")

# Per row, a state's document (its key, NULL, the JSON) or one of its memory rows (the
# state's key, the bucket, a JSON object tag -> memory): read in one SELECT, one moment.
STATE_ROWS = ("SELECT asset, NULL, state FROM asset_state "
              "UNION ALL SELECT owner, bucket, memories FROM telemetry_memory")
UPSERT_MEMORIES = ("INSERT INTO telemetry_memory (owner, bucket, memories) VALUES (?, ?, ?) "
                   "ON CONFLICT(owner, bucket) DO UPDATE SET memories = excluded.memories")


@functools.lru_cache(maxsize=65536)  # the tags of a config: a bounded set
def bucket_of(tag: str) -> int:
    """The row a tag's memory lives in: stable across processes (unlike hash())."""
    return zlib.crc32(tag.encode()) % BUCKETS


def from_rows(rows: Iterable[Iterable[object]]) -> dict[str, str]:
    """The documents, merged, from rows of STATE_ROWS."""
    documents: dict[str, str] = {}
    memories: list[tuple[str, str]] = []
    for key, bucket, text in rows:
        if bucket is None:
            documents[str(key)] = str(text)
        else:
            memories.append((str(key), str(text)))
    return merged(documents, memories)


def merged(documents: dict[str, str], memories: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The documents with their memories (owner, JSON object of tag -> memory) in them
    again. A document with no memory rows is returned as it was stored. The standard
    library's json reads and writes them: a memory may hold NaN or an infinity, which it
    keeps (derive/state.py)."""
    by_owner: dict[str, dict[str, object]] = {}
    for owner, text in memories:
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            # Only a hand-edited or damaged file has one. Its tags start again as never
            # published (each is sent on its next value); the state's other rows stand.
            log.warning("buffer: a row of telemetry memories of %s cannot be read; its tags "
                        "are published again on their next value", owner)
            continue
        by_owner.setdefault(owner, {}).update(found)
    result = dict(documents)
    for owner, found in by_owner.items():
        # A state whose document never changed from its defaults has memories only (a
        # tag seen but not yet published writes no sequence): the defaults, with them.
        document = json.loads(documents[owner]) if owner in documents else {}
        document[TELEMETRY] = {**(document.get(TELEMETRY) or {}), **found}
        result[owner] = json.dumps(document, separators=(",", ":"))
    return result


def normalize(db: sqlite3.Connection) -> int:
    """Move memories still inside documents (written before schema 5, or salvaged from
    such a file) into rows, in one transaction. Returns how many documents it rewrote."""
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
            stored = {int(bucket): json.loads(memories) for bucket, memories in db.execute(
                "SELECT bucket, memories FROM telemetry_memory WHERE owner = ?", (owner,))}
            for tag, memory in inline.items():
                # A row already there was written later than the document: it stays.
                stored.setdefault(bucket_of(tag), {}).setdefault(tag, memory)
            db.executemany(UPSERT_MEMORIES, [
                (owner, bucket, json.dumps(memories, separators=(",", ":")))
                for bucket, memories in stored.items()])
            db.execute("UPDATE asset_state SET state = ? WHERE asset = ?",
                       (json.dumps(document, separators=(",", ":")), owner))
            rewritten += 1
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return rewritten
