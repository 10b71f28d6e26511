"""Exact Modbus decoding and request planning."""

from __future__ import annotations

import struct

import pytest

from agent.settings.models import ModbusTag
from drivers.modbus.decode import decode_registers
from drivers.modbus.plan import plan_reads


def tag(**kwargs: object) -> ModbusTag:
    return ModbusTag.model_validate({"name": "t", "table": "holding_register", "address": 0,
                                     **kwargs})


@pytest.mark.parametrize(("order", "words"), [
    ("ABCD", [0x436E, 0x0000]), ("CDAB", [0x0000, 0x436E]),
    ("BADC", [0x6E43, 0x0000]), ("DCBA", [0x0000, 0x6E43]),
])
def test_float32_in_every_word_order_is_238_volts(order: str, words: list[int]) -> None:
    assert decode_registers(words, tag(type="float32", order=order)) == 238.0


def test_integer_types_and_scale() -> None:
    assert decode_registers([0xFFFF], tag(type="int16")) == -1
    assert decode_registers([0x0001, 0x0002], tag(type="uint32")) == 65538
    assert decode_registers([0x0002, 0x0001], tag(type="uint32", order="CDAB")) == 65538
    words = list(struct.unpack(">4H", struct.pack(">q", -5)))
    assert decode_registers(words, tag(type="int64")) == -5
    assert decode_registers([250], tag(type="uint16", scale=0.1, offset=-5)) == pytest.approx(20)
    assert decode_registers([0b100], tag(type="bool", bit=2)) is True


def test_string_registers() -> None:
    words = [int.from_bytes(b"WO", "big"), int.from_bytes(b"-1", "big"), 0]
    assert decode_registers(words, tag(type="string", length=3)) == "WO-1"


def test_conventional_register_numbers() -> None:
    assert tag(table=None, address=None, register=40001).location == ("holding_register", 0)
    assert ModbusTag.model_validate({"name": "x", "register": 30010}).location == (
        "input_register", 9)
    assert ModbusTag.model_validate({"name": "x", "register": 10001, "type": "bool"}).location == (
        "discrete_input", 0)


def test_plan_merges_near_tags_and_respects_the_125_register_limit() -> None:
    tags = [tag(name="a", address=0), tag(name="b", address=1, type="uint32"),
            tag(name="c", address=10), tag(name="d", address=100),
            tag(name="e", address=110, type="uint32")]
    plan = plan_reads(tags, max_gap=16)
    assert [(r.start, r.count) for r in plan] == [(0, 11), (100, 12)]
    far = plan_reads([tag(name="a", address=0), tag(name="b", address=200)], max_gap=16)
    assert len(far) == 2
    wide = plan_reads([tag(name=f"t{i}", address=i * 10) for i in range(20)], max_gap=16)
    assert all(r.count <= 125 for r in wide)
    assert len(wide) == 2
