"""Reading a SQLite WAL file after a crash, to tell whether the kill interrupted a commit.

Format (sqlite.org/fileformat2.html#walformat): a 32-byte header with two salts,
then frames of a 24-byte header plus one page. A frame belongs to the current
WAL generation when its salts equal the header's; a frame whose "database size
after commit" field is non-zero ends a transaction. Current-generation frames
after the last commit frame are a transaction that was being written when the
process died: SQLite discards them at the next open.
"""

from __future__ import annotations

import struct
from pathlib import Path

HEADER = 32
FRAME_HEADER = 24


def uncommitted_frames(wal: Path) -> int:
    if not wal.exists() or wal.stat().st_size < HEADER:
        return 0
    data = wal.read_bytes()
    magic, _version, page_size, _seq, salt1, salt2 = struct.unpack(">6I", data[:24])
    if magic not in (0x377F0682, 0x377F0683):
        return 0
    offset, pending = HEADER, 0
    while offset + FRAME_HEADER <= len(data):
        _page, commit_size, frame_salt1, frame_salt2 = struct.unpack(
            ">4I", data[offset:offset + 16])
        if (frame_salt1, frame_salt2) != (salt1, salt2):
            break  # an older generation's leftovers: the current log ended before them
        pending = 0 if commit_size else pending + 1
        offset += FRAME_HEADER + page_size
    return pending
