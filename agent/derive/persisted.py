"""What a commit writes of the derivation states: the documents and memories that changed.

A state is stored as a document without its telemetry memories, and a row per memory
(buffer/states.py). Derivation copies on write, so a state it did not touch is the
committed object itself, and so is each memory it did not touch: a commit writes only
what moved, and a device with 2,500 tags where one moved writes one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .state import DEVICE_KEY, AssetState, DeviceState


@dataclass
class StateWrites:
    documents: dict[str, str] = field(default_factory=dict)  # state key -> JSON
    memories: list[tuple[str, str, str]] = field(default_factory=list)  # key, tag, JSON

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
        earlier = before.telemetry if before is not None else {}
        for tag, memory in state.telemetry.items():
            old = earlier.get(tag)
            if old is not memory and (old is None or not memory.same_as(old)):
                writes.memories.append((key, tag, memory.to_json()))
    return writes
