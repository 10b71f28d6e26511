"""Operators' reasons for stops, through the single writer into a real SQLite buffer: the
events, the stop's record, the shift's timeline, refusals, and a restart in between."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_contract import SCHEMA_DIR

from agent.derive import DeriveContext, compile_assets
from agent.events import Lane
from agent.pipeline import Pipeline
from agent.settings import load_config_text
from agent.shared import Classification, ClassificationRefused, Sample
from agent.shift.figures import is_micro_stop
from agent.shift.view import figures_for
from agent.shift.windows import Window
from buffer import Outbox, downtimes
from buffer.history import segments

CONFIG = """
site: s
agent: {id: a}
devices:
  - id: plc
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: state, register: 40001}
      - {name: fault, register: 40002}
assets:
  - id: press-1
    state: {tag: plc.state, map: {1: running, 3: down}}
    reason:
      tag: plc.fault
      texts: {7: Jam}
      choices:
        - {code: 7, text: Jam, group: Machine}
        - {code: 21, text: Waiting for material, group: Material}
        - {code: 22, text: No operator}
    downtime: {micro_stop: 10s}
  - id: press-2
    state: {tag: plc.state, map: {1: running, 3: down}}
"""


async def make_pipeline(path: Path, clock: list[float]) -> Pipeline:
    config = load_config_text(CONFIG, "config.yaml", path.parent)
    outbox = await Outbox.open(path, [])
    return Pipeline(compile_assets(config), await outbox.load_states(), outbox,
                    DeriveContext(site="s", agent="a", epoch=outbox.epoch), asyncio.Queue(),
                    clock=lambda: clock[0])


def state(value: int, at: float, fault: int = 0) -> list[Sample]:
    return [Sample("plc", "fault", fault, "good", at), Sample("plc", "state", value, "good", at)]


async def ask(pipeline: Pipeline, **kwargs: object) -> str:
    fields: dict[str, Any] = {"asset": "press-1", "person": "ana", **kwargs}
    choice = Classification(**fields, outcome=asyncio.get_running_loop().create_future())
    await pipeline.step([choice])
    assert choice.outcome is not None
    return await choice.outcome


async def stop_between(pipeline: Pipeline, clock: list[float], start: float, end: float,
                       fault: int = 0) -> str:
    clock[0] = start
    await pipeline.step([state(1, start - 100)])
    await pipeline.step([state(3, start, fault)])
    clock[0] = start + 20
    started = await pipeline.step([])
    downtime_id = next(e.data["downtime_id"] for e in started if e.type == "downtime.started")
    clock[0] = end
    await pipeline.step([state(1, end)])
    return str(downtime_id)


async def test_a_closed_stop_classified_twice_then_split(tmp_path: Path) -> None:
    clock = [10_000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    stop = await stop_between(pipeline, clock, 10_000.0, 10_600.0)

    first = (await ask(pipeline, downtime_id=stop, code=21)).split()
    again = (await ask(pipeline, downtime_id=stop, code=22)).split()
    events = {e.id: e for e in await _classified(pipeline)}
    one, two = events[first[0]], events[again[0]]
    assert (one.data["reason"], one.data["replaces"], one.data["replaces_plc_reason"]) == (
        "Waiting for material", None, False)
    assert (two.data["reason"], two.data["replaces"]) == ("No operator", one.id)
    assert two.sequence > one.sequence
    assert (two.data["started_at"], two.data["ended_at"]) == (
        "1970-01-01T02:46:40.000Z", "1970-01-01T02:56:40.000Z")

    split = (await ask(pipeline, downtime_id=stop, code=7, split_at=10_200.0,
                       second_code=21)).split()
    events = {e.id: e for e in await _classified(pipeline)}
    first_part, second_part = events[split[0]], events[split[1]]
    assert (first_part.data["part"], first_part.data["parts"], first_part.data["reason"],
            first_part.data["replaces"], first_part.data["ended_at"]) == (
        1, 2, "Jam", two.id, "1970-01-01T02:50:00.000Z")
    assert (second_part.data["part"], second_part.data["reason"],
            second_part.data["replaces"], second_part.data["started_at"]) == (
        2, "Waiting for material", None, "1970-01-01T02:50:00.000Z")

    row = await downtimes.downtime(pipeline.outbox, "press-1", stop)
    assert row is not None
    assert [(p["reason"], p["by"]) for p in row.detail["parts"]] == [
        ("Jam", "ana"), ("Waiting for material", "ana")]
    timeline = [(s.start, s.end, s.state, s.reason)
                for s in await segments(pipeline.outbox, "press-1", 9_000.0, 11_000.0)]
    assert timeline == [(9_900.0, 10_000.0, "running", None),
                        (10_000.0, 10_200.0, "down", "Jam"),
                        (10_200.0, 10_600.0, "down", "Waiting for material"),
                        (10_600.0, None, "running", None)]

    # A split stop stays split: part 2 alone changes, and a new split moves the time.
    changed = (await ask(pipeline, downtime_id=stop, code=22, part=2)).split()
    events = {e.id: e for e in await _classified(pipeline)}
    assert (events[changed[0]].data["replaces"], events[changed[0]].data["started_at"]) == (
        second_part.id, "1970-01-01T02:50:00.000Z")
    await pipeline.outbox.close()


async def test_an_open_stop_takes_the_operators_reason_to_its_end(tmp_path: Path) -> None:
    clock = [10_000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    await pipeline.step([state(1, 9_900.0)])
    await pipeline.step([state(3, 10_000.0, fault=7)])
    clock[0] = 10_020.0
    started = await pipeline.step([])
    stop = next(e.data["downtime_id"] for e in started if e.type == "downtime.started")
    with pytest.raises(ClassificationRefused, match="still going on"):
        await ask(pipeline, downtime_id=stop, code=21, split_at=10_010.0, second_code=22)
    ids = (await ask(pipeline, downtime_id=stop, code=21)).split()
    classified = {e.id: e for e in await _classified(pipeline)}[ids[0]]
    assert classified.data["ended_at"] is None
    assert (classified.data["replaces_plc_reason"], classified.data["plc_reason_code"]) == (
        True, 7)
    await pipeline.outbox.close()

    pipeline = await make_pipeline(tmp_path / "b.db", clock)  # a restart keeps it
    clock[0] = 10_300.0
    ended = [e for e in await pipeline.step([state(1, 10_300.0)])
             if e.type == "downtime.ended" and e.subject == "press-1"]
    assert [(e.data["reason_code"], e.data["reason"], e.data["classified_by"])
            for e in ended] == [(21, "Waiting for material", "ana")]
    row = await downtimes.downtime(pipeline.outbox, "press-1", str(stop))
    assert row is not None
    assert (row.end, row.reason, row.detail["plc_code"]) == (10_300.0, "Waiting for material", 7)
    await pipeline.outbox.close()


async def test_refusals_say_what_to_do_and_commit_nothing(tmp_path: Path) -> None:
    clock = [10_000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    stop = await stop_between(pipeline, clock, 10_000.0, 10_600.0)
    before = pipeline.events_committed
    cases = [
        ({"downtime_id": stop, "code": 99}, "not in the reason list"),
        ({"downtime_id": "nope", "code": 21}, "no longer listed"),
        ({"downtime_id": stop, "code": 21, "asset": "press-2"}, "no longer listed"),
        ({"downtime_id": stop, "code": 21, "asset": "ghost"}, "no asset"),
        ({"downtime_id": stop, "code": 21, "split_at": 10_000.5, "second_code": 22},
         "at least 1 s inside"),
        ({"downtime_id": stop, "code": 21, "split_at": 10_300.0}, "reason for each part"),
        ({"downtime_id": stop, "code": 21, "part": 2}, "has 1 part"),
    ]
    for kwargs, said in cases:
        with pytest.raises(ClassificationRefused, match=said):
            await ask(pipeline, **kwargs)
    assert pipeline.events_committed == before
    await pipeline.outbox.close()


@dataclass(frozen=True)
class Stored:
    id: str
    sequence: int
    data: dict[str, Any]


async def _classified(pipeline: Pipeline) -> list[Stored]:
    """The downtime.classified events as the buffer holds them."""
    rows = await pipeline.outbox.fetch(Lane.BUSINESS, 0, 1000)
    bodies = [json.loads(row.body) for row in rows]
    return [Stored(b["id"], b["sequence"], b["data"]) for b in bodies
            if b["type"] == "floorlink.downtime.classified.v1"]


async def test_the_parts_of_a_split_stop_stay_downtime_in_the_shift_figures(
        tmp_path: Path) -> None:
    """A 30 s stop (micro_stop 10 s) split at 5 s: a 5 s part is no micro-stop."""
    clock = [10_000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    stop = await stop_between(pipeline, clock, 10_000.0, 10_030.0)
    await ask(pipeline, downtime_id=stop, code=7, split_at=10_005.0, second_code=21)
    spec = pipeline.specs[0]
    window = Window(9_000.0, 11_000.0, "test")
    figures, history = await figures_for(pipeline.outbox, spec, window, 11_000.0)
    down = [(s.end - s.start if s.end else None, s.reason) for s in history
            if s.state == "down"]
    assert down == [(5.0, "Jam"), (25.0, "Waiting for material")]
    assert not any(is_micro_stop(s, spec.micro_stop) for s in history)
    pareto = figures.view()["downtime_by_reason"]
    assert {reason: (round(v["minutes"] * 60), v["count"]) for reason, v in pareto.items()} == {
        "Waiting for material": (25, 1), "Jam": (5, 1)}
    await pipeline.outbox.close()


async def test_classified_events_fit_the_published_schema(tmp_path: Path) -> None:
    clock = [10_000.0]
    pipeline = await make_pipeline(tmp_path / "b.db", clock)
    stop = await stop_between(pipeline, clock, 10_000.0, 10_600.0, fault=7)
    await ask(pipeline, downtime_id=stop, code=21)
    await ask(pipeline, downtime_id=stop, code=22, split_at=10_100.0, second_code=7)
    clock[0] = 11_000.0
    await pipeline.step([state(3, 11_000.0)])
    clock[0] = 11_020.0
    started = await pipeline.step([])
    open_stop = next(e.data["downtime_id"] for e in started if e.type == "downtime.started")
    await ask(pipeline, downtime_id=open_stop, code=21)
    clock[0] = 11_100.0
    await pipeline.step([state(1, 11_100.0)])
    rows = await pipeline.outbox.fetch(Lane.BUSINESS, 0, 1000)
    documents = [json.loads(row.body) for row in rows]
    kinds = [d["type"] for d in documents]
    assert kinds.count("floorlink.downtime.classified.v1") == 4
    for document in documents:
        jsonschema.validate(document, json.loads(
            (SCHEMA_DIR / f"{document['type']}.json").read_text()))
    await pipeline.outbox.close()
