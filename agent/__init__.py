"""floorlink: PLC signals in, ERP-ready events out, nothing lost on the way."""

__version__ = "0.1.0"
