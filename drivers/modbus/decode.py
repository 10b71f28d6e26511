"""Register words to values, with explicit byte and word order.

ABCD is big-endian bytes in big-endian words (the Modbus default); CDAB swaps
the words (common on PLCs that store 32-bit values low word first); BADC swaps
the bytes in each word; DCBA is fully little-endian.
"""

from __future__ import annotations

import struct

from agent.settings.models import ModbusTag

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
            "int64": ">q", "uint64": ">Q", "float64": ">d"}


class DecodeError(ValueError):
    pass


def order_bytes(words: list[int], order: str) -> bytes:
    if order in ("CDAB", "DCBA"):
        words = list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if order in ("BADC", "DCBA"):
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    return raw


def decode_registers(words: list[int], tag: ModbusTag) -> object:
    if len(words) != tag.width:
        raise DecodeError(f"expected {tag.width} registers, got {len(words)}")
    if tag.type == "bool":
        return bool((words[0] >> tag.bit) & 1) if tag.bit is not None else words[0] != 0
    if tag.type == "string":
        text = order_bytes(words, "BADC" if tag.order in ("BADC", "DCBA") else "ABCD")
        return text.split(b"\x00", 1)[0].decode("latin-1").strip()
    (value,) = struct.unpack(_FORMATS[tag.type], order_bytes(words, tag.order))
    if tag.scale != 1.0 or tag.offset != 0.0:
        return value * tag.scale + tag.offset
    return value
