"""What a commit writes of the derivation states: the documents and memory rows that changed.

A state is stored as a document without its telemetry memories, and the memories in rows
of up to a few dozen tags each (buffer/states.py). Derivation copies on write, so a state
it did not touch is the committed object itself, and so is each memory it did not touch:
a commit writes only what moved. A device with 2,500 tags where one moved writes its small
document and the one row holding that tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from buffer.states import bucket_of

from .derive.state import DEVICE_KEY, AssetState, DeviceState, TelemetryMemory, memories_json


@dataclass
class StateWrites:
    documents: dict[str, str] = field(default_factory=dict)  # state key -> JSON
    memories: list[tuple[str, int, str]] = field(default_factory=list)  # key, bucket, JSON

    def __bool__(self) -> bool:
        return bool(self.documents or self.memories)


def state_writes(states: dict[str, AssetState], device_states: dict[str, DeviceState],
                 committed: dict[str, AssetState], committed_devices: dict[str, DeviceState],
                 committed_documents: dict[str, str]) -> StateWrites:
    """The writes that take the committed states (and their documents' JSON) to these."""
    touched: list[tuple[str, AssetState | DeviceState, AssetState | DeviceState | None]]
    touched = [(asset, st, committed.get(asset)) for asset, st in states.items()
               if st is not committed.get(asset)]
    touched += [(DEVICE_KEY + device, st, committed_devices.get(device))
                for device, st in device_states.items()
                if st is not committed_devices.get(device)]
    writes = StateWrites()
    for key, state, before in touched:
        text = state.document_json()
        if text != committed_documents.get(key):
            writes.documents[key] = text
        rows = _changed_rows(state.telemetry, before.telemetry if before else {})
        writes.memories += [(key, bucket, memories_json(group)) for bucket, group in rows]
    return writes


def _changed_rows(memories: dict[str, TelemetryMemory], earlier: dict[str, TelemetryMemory]
                  ) -> list[tuple[int, dict[str, TelemetryMemory]]]:
    """Each row (bucket) holding a memory that differs from the committed one, whole.
    One pass, no call for an untouched memory: this runs over every memory of a touched
    state in every commit (when all 500 tags of a scan move, it is most of the writing)."""
    rows: dict[int, dict[str, TelemetryMemory]] = {}
    changed: set[int] = set()
    buckets = _BUCKETS
    for tag, memory in memories.items():
        bucket = buckets.get(tag)
        if bucket is None:
            bucket = buckets[tag] = bucket_of(tag)
        row = rows.get(bucket)
        if row is None:
            row = rows[bucket] = {}
        row[tag] = memory
        old = earlier.get(tag)
        # Fields that differ need no call; equal ones may still differ in type (same_as).
        if old is not memory and (old is None or old.__dict__ != memory.__dict__
                                  or not memory.same_as(old)):
            changed.add(bucket)
    return [(bucket, rows[bucket]) for bucket in sorted(changed)]


# tag -> its row, for the tags of this config (a bounded set): a dict lookup is a third
# of a call to bucket_of's cache.
_BUCKETS: dict[str, int] = {}
