"""Shift figures against a scripted line whose true OEE is worked out by hand.

One hour of a press, derived by the real derivation and committed to a real buffer, its
history read back and turned into figures:

    0    - 1200 s  running                        1200 s
    1200 - 1800 s  down, hydraulic pressure loss   600 s  (a downtime)
    1800 - 2400 s  running                         600 s
    2400 - 2403 s  down                              3 s  (a micro-stop: under 5 s)
    2403 - 3000 s  running                         597 s
    3000 - 3600 s  planned stop                    600 s

    planned time = 3600 - 600              = 3000 s
    run time     = 1200 + 600 + 597 + 3    = 2400 s   (a micro-stop is run time)
    availability = 2400 / 3000             = 0.80
    parts        = 540 good + 60 scrap     = 600
    performance  = 3 s ideal x 600 / 2400  = 0.75
    quality      = 540 / 600               = 0.90
    OEE          = 0.80 x 0.75 x 0.90      = 0.54
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import REPO
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.derive import (
    AssetSpec,
    AssetState,
    DeriveContext,
    apply_samples,
    apply_tick,
    compile_assets,
)
from agent.pipeline import Pipeline
from agent.settings import load_config_text
from agent.shared import Sample
from agent.shift.figures import compute
from agent.shift.view import shift_views
from agent.shift.windows import Window, shift_at
from agent.status.board import StatusBoard
from agent.status.metrics import AgentMetrics
from agent.status.page import render
from buffer import Outbox
from buffer.history import gaps, parts, record_restart, segments

T0 = 1_764_000_000.0  # a shift start
SPEC = AssetSpec(
    id="press-1", area="stamping", line="line-1",
    roles={"plc.state": "state", "plc.good": "good", "plc.scrap": "scrap",
           "plc.fault": "reason"},
    state_map={1: "running", 3: "down", 5: "planned_stop"}, micro_stop=5.0, interval=60.0,
    reason_texts={101: "Hydraulic pressure loss"},
    counter_modulus={"good": None, "scrap": None},
)
SCRIPT = [(0, 1200, 1, 0), (1200, 1800, 3, 101), (1800, 2400, 1, 0), (2400, 2403, 3, 0),
          (2403, 3000, 1, 0), (3000, 3601, 5, 0)]  # (from, to, state code, fault)
RUNNING = 1200 + 600 + 597


def ran(t: float) -> float:
    """Seconds run before t: the counters follow it, 600 parts over the hour's run."""
    return sum(max(0.0, min(end, t) - start) for start, end, code, _ in SCRIPT if code == 1)


def scripted_events() -> list[list[Any]]:
    """The derivation's commits for the scripted hour: one list of events per scan."""
    counter = itertools.count(1)
    ctx = DeriveContext(site="s", agent="a", epoch=1, new_id=lambda: f"id-{next(counter)}")
    state, commits = AssetState(), []
    for start, end, code, fault in SCRIPT:
        for t in [*range(start, end, 1 if end - start < 10 else 10), end - 1]:
            good, scrap = int(540 * ran(t) // RUNNING), int(60 * ran(t) // RUNNING)
            samples = [Sample("plc", tag, value, "good", T0 + t, False) for tag, value in
                       (("state", code), ("fault", fault), ("good", good), ("scrap", scrap))]
            state, produced = apply_samples(SPEC, state, samples, T0 + t, ctx)
            state, ticked = apply_tick(SPEC, state, T0 + t, ctx)
            commits.append(produced + ticked)
    return commits


async def test_a_scripted_hour_gives_the_oee_worked_out_by_hand(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "b.db", ["erp"])
    try:
        for events in scripted_events():
            await box.commit(events, {})
        window = Window(T0, T0 + 8 * 3600, "scripted")
        history = await segments(box, "press-1", T0, T0 + 3600)
        made = await parts(box, "press-1", T0, T0 + 3600)
    finally:
        await box.close()
    figures = compute(window, T0 + 3600, history, made, ideal_cycle=3.0,
                      micro_stop=SPEC.micro_stop)
    assert figures.seconds["planned_stop"] == pytest.approx(600, abs=1)
    assert figures.micro_stop_s == pytest.approx(3, abs=1e-6)
    assert figures.downtime_by_reason == {
        "Hydraulic pressure loss": {"minutes": pytest.approx(10, abs=0.02), "count": 1}}
    assert (figures.good, figures.scrap) == (540, 60)
    assert figures.availability == pytest.approx(0.80, abs=0.001)
    assert figures.performance == pytest.approx(0.75, abs=0.001)
    assert figures.quality == pytest.approx(0.90, abs=0.001)
    assert figures.oee == pytest.approx(0.54, abs=0.001)
    assert sum(h["good"] for h in figures.parts_per_hour) == 540


def test_without_an_ideal_cycle_there_is_no_oee_but_availability_and_quality() -> None:
    window = Window(T0, T0 + 3600, "x")
    figures = compute(window, T0 + 3600, [], [])
    assert figures.oee is None
    assert figures.seconds["no_data"] == 3600  # nothing known of this hour


def test_shifts_follow_the_zone_and_a_day_without_shifts() -> None:
    at = 1_764_662_400.0  # 2025-12-02 08:00 UTC = 09:00 in Berlin
    morning = shift_at(at, ["06:00", "14:00", "22:00"], "Europe/Berlin")
    assert morning.label == "2025-12-02 06:00"
    assert morning.end - morning.start == 8 * 3600
    night = shift_at(at - 10 * 3600, ["06:00", "14:00", "22:00"], "Europe/Berlin")
    assert night.label == "2025-12-01 22:00"
    day = shift_at(at, [], "Europe/Berlin")
    assert day.label == "2025-12-02 00:00"
    assert day.end - day.start == 24 * 3600
    # The night shift that spans the clock change in March lasts 7 hours.
    spring = shift_at(1_774_746_000.0, ["06:00", "14:00", "22:00"], "Europe/Berlin")
    assert spring.end - spring.start == 7 * 3600


async def scripted_board(tmp_path: Path) -> StatusBoard:
    """A board whose shift views come from the scripted hour, through a real buffer."""
    box = await Outbox.open(tmp_path / "b.db", ["erp"])
    try:
        for events in scripted_events():
            await box.commit(events, {})
        specs = compile_assets(load_config_text(ASSET_CONFIG, "c.yaml", tmp_path))
        views = await shift_views(box, specs, T0 + 3600)
    finally:
        await box.close()
    board = StatusBoard(site="plant", agent="edge-1", alive=True)
    board.shifts = views
    return board


async def test_the_page_draws_the_shift_for_a_technician(tmp_path: Path) -> None:
    """The scripted hour on the page: timeline segments with their reasons, the OEE line,
    the Pareto and the bars, as SVG and HTML without a script."""
    board = await scripted_board(tmp_path)
    view = board.snapshot()
    current = view["shifts"]["press-1"]["current"]
    assert current["oee"] == pytest.approx(0.54, abs=0.001)
    assert [s["state"] for s in current["timeline"]] == [
        "running", "down", "running", "micro_stop", "running", "planned_stop"]
    page = render(view)
    assert "OEE <b>54%</b> = availability 80% &times; performance 75% &times; quality 90%" \
        in page
    assert "down: Hydraulic pressure loss" in page
    assert "<td>Hydraulic pressure loss</td><td>10 min</td>" in page  # 600 s
    assert page.count("<title>") >= 7  # a hover text per segment and per bar
    assert "<script" not in page


ASSET_CONFIG = """
site: s
devices: [{id: plc, protocol: modbus_tcp, host: 127.0.0.1,
           tags: [{name: state, register: 40001}, {name: good, register: 40002},
                  {name: scrap, register: 40003}, {name: fault, register: 40004}]}]
assets:
  - id: press-1
    state: {tag: plc.state, map: {1: running, 3: down, 5: planned_stop}}
    counters: {good: plc.good, scrap: plc.scrap}
    reason: {tag: plc.fault, texts: {101: Hydraulic pressure loss}}
    downtime: {micro_stop: 5s}
    production: {interval: 60s, shifts: ["06:00", "14:00", "22:00"], timezone: UTC}
    oee: {ideal_cycle: 3s}
"""


async def test_the_shift_figures_are_prometheus_gauges(tmp_path: Path) -> None:
    board = await scripted_board(tmp_path)
    text = generate_latest(AgentMetrics(board).registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("floorlink_shift_oee", (("asset", "press-1"),))] == pytest.approx(0.54,
                                                                                     abs=0.001)
    assert samples[("floorlink_shift_downtime_minutes",
                    (("asset", "press-1"), ("reason", "Hydraulic pressure loss")))] == \
        pytest.approx(10, abs=0.02)
    assert samples[("floorlink_shift_parts", (("asset", "press-1"), ("kind", "good")))] == 540


async def scripted_pipeline(path: Path, clock: list[float],
                            stopped_at: float | None = None) -> Pipeline:
    """The pipeline as the agent starts it; `stopped_at` is when the agent last committed
    (the buffer's own record is wall-clock time, and these tests run on a scripted one)."""
    config = load_config_text(ASSET_CONFIG, "c.yaml", path.parent)
    outbox = await Outbox.open(path, [])
    if stopped_at is not None:
        await record_restart(outbox, clock[0], last=stopped_at)
    return Pipeline(compile_assets(config), await outbox.load_states(), outbox,
                    DeriveContext(site="s", agent="a", epoch=outbox.epoch), asyncio.Queue(),
                    clock=lambda: clock[0])


async def feed_script(pipeline: Pipeline, clock: list[float], until: float = 3601) -> None:
    for start, end, code, fault in SCRIPT:
        for t in [*range(start, end, 1 if end - start < 10 else 10), end - 1]:
            if t >= until:
                return
            clock[0] = T0 + t
            good, scrap = int(540 * ran(t) // RUNNING), int(60 * ran(t) // RUNNING)
            await pipeline.step([[Sample("plc", tag, value, "good", T0 + t, False)
                                  for tag, value in (("state", code), ("fault", fault),
                                                     ("good", good), ("scrap", scrap))]])


def check_contract(event: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(event.to_json())
    jsonschema.validate(document, json.loads(
        (REPO / "docs" / "schemas" / f"{document['type']}.json").read_text()))
    return dict(document["data"])


async def test_shift_completed_reports_the_shift_once_with_the_oee_worked_out_by_hand(
        tmp_path: Path) -> None:
    """The 14:00-22:00 shift holds the scripted hour at 16:00-17:00; before it the agent
    saw nothing (no data), after it the press stays in its planned stop. So the shift has
    the hour's availability, performance and quality: OEE 0.54 again."""
    clock = [T0]
    pipeline = await scripted_pipeline(tmp_path / "b.db", clock)
    assert await pipeline.end_shifts() == []  # the first start: reports from this shift on
    await feed_script(pipeline, clock)
    clock[0] = T0 + 6 * 3600 - 1  # 21:59:59: not over yet
    assert await pipeline.end_shifts() == []
    clock[0] = T0 + 6 * 3600 + 1  # 22:00:01
    [event] = await pipeline.end_shifts()
    assert await pipeline.end_shifts() == []  # once
    await pipeline.outbox.close()
    data = check_contract(event)
    assert event.type == "shift.completed"
    assert data["shift"]["label"] == "2025-11-24 14:00"
    assert data["no_data_s"] == pytest.approx(7200, abs=1)
    assert data["planned_stop_s"] == pytest.approx(600 + 5 * 3600, abs=2)
    assert data["run_s"] == pytest.approx(2400, abs=1)
    assert (data["good"], data["scrap"]) == (540, 60)
    assert data["availability"] == pytest.approx(0.80, abs=0.001)
    assert data["oee"] == pytest.approx(0.54, abs=0.001)
    assert data["downtime_by_reason"] == [
        {"reason": "Hydraulic pressure loss", "minutes": pytest.approx(10, abs=0.02),
         "count": 1}]
    assert data["estimated"] is False


async def test_a_restart_inside_the_shift_makes_it_estimated_with_the_gap(
        tmp_path: Path) -> None:
    clock = [T0]
    first = await scripted_pipeline(tmp_path / "b.db", clock)
    await first.end_shifts()
    await feed_script(first, clock, until=1800)  # stopped at 16:30
    await first.outbox.close()
    clock[0] = T0 + 2400  # back at 16:40
    second = await scripted_pipeline(tmp_path / "b.db", clock, stopped_at=T0 + 1799)
    clock[0] = T0 + 6 * 3600 + 1
    [event] = await second.end_shifts()
    await second.outbox.close()
    data = check_contract(event)
    assert data["estimated"] is True
    assert data["gaps"] == [{"from": "2025-11-24T16:29:59.000Z",
                             "to": "2025-11-24T16:40:00.000Z"}]


async def test_a_restart_records_the_time_the_agent_was_away(tmp_path: Path) -> None:
    """By the buffer's own record of its last state write (wall-clock time)."""
    box = await Outbox.open(tmp_path / "b.db", [])
    try:
        await box.commit([], {"press-1": "{}"})
        written = time.time()
        await record_restart(box, written + 2)  # a quick restart is no gap
        assert await gaps(box, 0, written + 1e6) == []
        await record_restart(box, written + 600)
        [(start, end)] = await gaps(box, 0, written + 1e6)
        assert start == pytest.approx(written, abs=2)
        assert end == written + 600
    finally:
        await box.close()
