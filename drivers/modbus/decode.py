"""Register words to values, with explicit byte and word order.

ABCD is big-endian bytes in big-endian words (the Modbus default); CDAB swaps the words
(common on PLCs that store 32-bit values low word first); BADC swaps the bytes in each
word; DCBA is fully little-endian.

Decoders are compiled once per tag: polling decodes the same tags thousands of times a
second, so the common cases take arithmetic shortcuts instead of packing bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from agent.settings.models import ModbusTag

Decoder = Callable[[Sequence[int], int], object]  # (response words, offset) -> value

_CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f",
          "int64": "q", "uint64": "Q", "float64": "d"}
_TWO_WORDS = struct.Struct(">HH")
_FLOAT32 = struct.Struct(">f")


class DecodeError(ValueError):
    pass


def order_bytes(words: Sequence[int], order: str) -> bytes:
    ordered = list(reversed(words)) if order in ("CDAB", "DCBA") else list(words)
    if order in ("BADC", "DCBA"):
        ordered = [((w & 0xFF) << 8) | (w >> 8) for w in ordered]
    return struct.pack(f">{len(ordered)}H", *ordered)


def compile_decoder(tag: ModbusTag) -> Decoder:
    """Decode `tag.width` words at an offset of a response (the caller checks its length)."""
    raw = _raw_decoder(tag)
    if tag.enum is not None:
        names = dict(tag.enum)
        number = raw

        def named(words: Sequence[int], at: int) -> object:
            value = number(words, at)
            return names.get(value, value) if isinstance(value, int) else value

        return named
    if tag.type in ("bool", "string") or (tag.scale == 1.0 and tag.offset == 0.0):
        return raw
    scale, offset = tag.scale, tag.offset

    def scaled(words: Sequence[int], at: int) -> object:
        return raw(words, at) * scale + offset  # type: ignore[operator]

    return scaled


def _raw_decoder(tag: ModbusTag) -> Decoder:
    kind, order, width = tag.type, tag.order, tag.width
    if kind == "bool":
        if tag.bit is not None:
            mask = 1 << tag.bit
            return lambda w, at: bool(w[at] & mask)
        return lambda w, at: w[at] != 0
    if kind == "string":
        swap = "BADC" if order in ("BADC", "DCBA") else "ABCD"
        return lambda w, at: (order_bytes(w[at:at + width], swap).split(b"\x00", 1)[0]
                              .decode("latin-1").strip())
    if order in ("ABCD", "CDAB"):  # arithmetic on whole words: no bytes needed
        high, low = (0, 1) if order == "ABCD" else (1, 0)
        if kind == "uint16":
            return lambda w, at: w[at]
        if kind == "int16":
            return lambda w, at: w[at] - 0x10000 if w[at] & 0x8000 else w[at]
        if kind == "uint32":
            return lambda w, at: (w[at + high] << 16) | w[at + low]
        if kind == "int32":
            def int32(w: Sequence[int], at: int) -> object:
                value = (w[at + high] << 16) | w[at + low]
                return value - 0x1_0000_0000 if value & 0x8000_0000 else value

            return int32
        if kind == "float32":
            pack, unpack = _TWO_WORDS.pack, _FLOAT32.unpack
            return lambda w, at: unpack(pack(w[at + high], w[at + low]))[0]
    unpack_any = struct.Struct(">" + _CODES[kind]).unpack
    return lambda w, at: unpack_any(order_bytes(w[at:at + width], order))[0]


def decode_registers(words: Sequence[int], tag: ModbusTag) -> object:
    if len(words) != tag.width:
        raise DecodeError(f"expected {tag.width} registers, got {len(words)}")
    return compile_decoder(tag)(words, 0)
