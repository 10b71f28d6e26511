"""The local SQLite buffer: a transactional outbox with one delivery cursor per uplink."""

from .outbox import LANES, BufferStats, Outbox, StoredEvent

__all__ = ["LANES", "BufferStats", "Outbox", "StoredEvent"]
