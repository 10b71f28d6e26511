"""Exact Modbus decoding and request planning."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# Known encodings: 123.456 as float32 is 0x42F6E979; -2 as int32 is 0xFFFFFFFE.
@pytest.mark.parametrize(("order", "words"), [
    ("ABCD", [0x42F6, 0xE979]), ("CDAB", [0xE979, 0x42F6]),
    ("BADC", [0xF642, 0x79E9]), ("DCBA", [0x79E9, 0xF642]),
])
def test_123_456_as_float32_in_every_order(order: str, words: list[int]) -> None:
    assert decode_registers(words, tag(type="float32", order=order)) == pytest.approx(123.456,
                                                                                     rel=1e-6)


@pytest.mark.parametrize(("kind", "order", "words", "value"), [
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2),
    ("uint64", "ABCD", [0, 0, 1, 2], (1 << 16) + 2),
    ("uint64", "CDAB", [2, 1, 0, 0], (1 << 16) + 2),
    ("float64", "ABCD", [0x405E, 0xDD2F, 0x1A9F, 0xBE77], 123.456),
    ("float64", "DCBA", [0x77BE, 0x9F1A, 0x2FDD, 0x5E40], 123.456),
    ("int16", "ABCD", [0xFFFE], -2),
    ("uint16", "ABCD", [0xFFFE], 65534),
])
def test_known_encodings(kind: str, order: str, words: list[int], value: float) -> None:
    assert decode_registers(words, tag(type=kind, order=order)) == pytest.approx(value)


tag_specs = st.lists(
    st.tuples(st.sampled_from(["holding_register", "input_register", "coil"]),
              st.integers(0, 3000),
              st.sampled_from(["uint16", "uint32", "float64", "string"])),
    min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(tag_specs, st.integers(0, 124))
def test_the_plan_reads_exactly_the_tags_asked_for(specs: list[tuple[str, int, str]],
                                                   max_gap: int) -> None:
    tags = []
    for index, (table, address, kind) in enumerate(specs):
        if table == "coil":
            kind = "bool"
        tags.append(ModbusTag.model_validate({
            "name": f"t{index}", "table": table, "address": address, "type": kind,
            **({"length": 3} if kind == "string" else {})}))
    plan = plan_reads(tags, max_gap)
    planned = [t.name for request in plan for t in request.tags]
    assert sorted(planned) == sorted(t.name for t in tags)  # every tag, once
    for request in plan:
        bits = request.table == "coil"
        assert request.count <= (2000 if bits else 125)
        for t in request.tags:
            assert t.location[0] == request.table
            width = 1 if bits else t.width
            assert request.start <= t.location[1]
            assert t.location[1] + width <= request.start + request.count


def test_enum_maps_name_integer_values() -> None:
    mode = tag(type="uint16", enum={0: "off", 1: "auto", 2: "manual"})
    assert decode_registers([1], mode) == "auto"
    assert decode_registers([7], mode) == 7  # no name: the number itself
    with pytest.raises(ValueError, match="integer type"):
        tag(type="float32", enum={0: "off"})
