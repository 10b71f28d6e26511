"""Merge tags into as few reads as the protocol allows, once per device.

A read covers at most 125 registers or 2,000 bits (the Modbus limits; some
servers answer an oversized read with exception 3, others with 4). Tags closer
than `max_gap` unused registers share a read.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.settings.models import ModbusTable, ModbusTag

MAX_REGISTERS = 125
MAX_BITS = 2000
BIT_TABLES = frozenset({"coil", "discrete_input"})


@dataclass(frozen=True)
class ReadRequest:
    table: ModbusTable
    start: int
    count: int
    tags: tuple[ModbusTag, ...]


def plan_reads(tags: list[ModbusTag], max_gap: int) -> list[ReadRequest]:
    by_table: dict[str, list[ModbusTag]] = {}
    for tag in tags:
        by_table.setdefault(tag.location[0], []).append(tag)
    plan: list[ReadRequest] = []
    for table, members in sorted(by_table.items()):
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        members.sort(key=lambda t: (t.location[1], t.width))
        group: list[ModbusTag] = []
        start = end = 0
        for tag in members:
            address = tag.location[1]
            tag_end = address + (1 if table in BIT_TABLES else tag.width)
            if group and address - end <= max_gap and max(end, tag_end) - start <= limit:
                group.append(tag)
                end = max(end, tag_end)
                continue
            if group:
                plan.append(ReadRequest(table, start, end - start, tuple(group)))  # type: ignore[arg-type]
            group, start, end = [tag], address, tag_end
        if group:
            plan.append(ReadRequest(table, start, end - start, tuple(group)))  # type: ignore[arg-type]
    return plan
