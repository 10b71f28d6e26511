"""The local SQLite buffer: a transactional outbox with one delivery cursor per uplink."""

from .migrate import SCHEMA_VERSION
from .outbox import LANE_CLASSES, LANES, Alarm, BufferStats, DeadLetter, Outbox, StoredEvent
from .retention import Enforced, Limits, enforce, free_space

__all__ = ["LANES", "LANE_CLASSES", "SCHEMA_VERSION", "Alarm", "BufferStats", "DeadLetter",
           "Enforced", "Limits", "Outbox", "StoredEvent", "enforce", "free_space"]
