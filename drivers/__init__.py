"""PLC drivers: each turns one device's tags into `Sample` batches. Read-only, always."""

from .base import Driver, Quality, Sample

__all__ = ["Driver", "Quality", "Sample"]
