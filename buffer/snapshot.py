"""The committed derivation states and how far the events go, read as one moment.

A consumer that announces current values (the Sparkplug uplink's births) reads the states
the pipeline committed and the position of the last event committed with them. Both come
from one SELECT, which SQLite answers from one snapshot: a commit in between cannot make
the states newer than the position, or older. An event at or below the position is
already in the states; one above it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .states import STATE_ROWS, from_rows

if TYPE_CHECKING:
    from .outbox import Outbox

# One row, with no key, carries the highest position ever given (AUTOINCREMENT keeps it
# in sqlite_sequence even when the events themselves are pruned); the others, the states.
SNAPSHOT = ("SELECT NULL, NULL, (SELECT seq FROM sqlite_sequence WHERE name = 'events') "
            f"UNION ALL {STATE_ROWS}")


@dataclass(frozen=True)
class Snapshot:
    states: dict[str, str]  # asset id, or "device:<id>" -> its state's JSON
    position: int  # the last event committed with these states; 0 before the first


async def committed(outbox: Outbox) -> Snapshot:
    rows = await outbox.read(SNAPSHOT)
    position = next((int(last or 0) for key, _, last in rows if key is None), 0)
    return Snapshot(from_rows(row for row in rows if row[0] is not None), position)
