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


# state key -> (how many memories, the tags in each row): kept by the pipeline that owns
# the states, whose memories only ever grow (a tag's memory is never dropped).
RowMembers = dict[str, tuple[int, dict[int, list[str]]]]


def state_writes(states: dict[str, AssetState], device_states: dict[str, DeviceState],
                 committed: dict[str, AssetState], committed_devices: dict[str, DeviceState],
                 committed_documents: dict[str, str], members_table: RowMembers) -> StateWrites:
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
        changed = _changed_buckets(state.telemetry, before.telemetry if before else {})
        if changed:
            members = _members(members_table, key, state.telemetry)
            writes.memories += [
                (key, bucket, memories_json({tag: state.telemetry[tag] for tag in members[bucket]}))
                for bucket in changed]
    return writes


def _changed_buckets(memories: dict[str, TelemetryMemory],
                     earlier: dict[str, TelemetryMemory]) -> list[int]:
    """The rows (buckets) holding a memory that differs from the committed one. This runs
    over every memory of a touched state in every commit: the scan for memories
    derivation replaced is one comprehension, and only those are compared."""
    replaced = [tag for tag, memory in memories.items() if earlier.get(tag) is not memory]
    changed = {bucket_of(tag) for tag in replaced
               if (old := earlier.get(tag)) is None or not memories[tag].same_as(old)}
    return sorted(changed)


def _members(table: RowMembers, key: str, memories: dict[str, TelemetryMemory]
             ) -> dict[int, list[str]]:
    """The tags in each row of a state's memories, so that writing a row walks only its
    own tags. Memories only ever grow, so the same count means the same tags."""
    known = table.get(key)
    if known is not None and known[0] == len(memories):
        return known[1]
    members: dict[int, list[str]] = {}
    for tag in memories:
        members.setdefault(bucket_of(tag), []).append(tag)
    table[key] = (len(memories), members)
    return members
