"""Derivation policies, one table or scenario each: dwell, micro-stops, reasons, holds,
maintenance, shifts, counters, snapshots, telemetry, clean stop."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_derive import SPEC, Run

from agent.derive import (
    AssetSpec,
    DeviceSpec,
    DeviceState,
    apply_device_samples,
    apply_samples,
    apply_stop,
)
from agent.derive.spec import TelemetryPolicy
from agent.shared import Sample


def spec(**changes: object) -> AssetSpec:
    return dataclasses.replace(SPEC, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------ machine state


def test_chatter_shorter_than_the_dwell_time_is_not_a_state_change() -> None:
    run = Run(spec(min_dwell=2.0))
    run.feed(0, state=1)
    run.feed(10, state=2)
    run.feed(10.5, state=1)  # back within the dwell time
    run.tick(20)
    assert [e.data["state"] for e in run.events] == ["running"]


def test_a_state_that_holds_counts_from_when_it_began() -> None:
    run = Run(spec(min_dwell=2.0))
    run.feed(0, state=1)  # the first state seen counts at once
    run.feed(10, state=2)
    assert [e.data["state"] for e in run.events] == ["running"]
    changed = run.tick(12)  # local clock: the dwell has passed
    assert changed[0].time == 10
    assert changed[0].data["previous_duration_s"] == 10


@pytest.mark.parametrize(("states", "downs"), [
    (frozenset({"down"}), 1),
    (frozenset({"down", "setup"}), 2),
])
def test_down_class_states_are_configurable(states: frozenset[str], downs: int) -> None:
    run = Run(spec(down_states=states, state_map={1: "running", 3: "down", 4: "setup"}))
    run.feed(0, state=1)
    run.feed(10, state=3)
    run.feed(20, state=1)
    run.feed(30, state=4)
    run.feed(40, state=1)
    assert run.types().count("downtime.started") == downs


def test_moving_between_two_down_states_is_one_downtime() -> None:
    run = Run(spec(down_states=frozenset({"down", "setup"}),
                   state_map={1: "running", 3: "down", 4: "setup"}))
    run.feed(0, state=1)
    run.feed(10, state=3)
    run.feed(20, state=4)
    run.feed(30, state=1)
    ended = [e for e in run.events if e.type == "downtime.ended"]
    assert len(ended) == 1
    assert ended[0].data["duration_s"] == 20


# ------------------------------------------------------------------ micro-stops and reasons


@pytest.mark.parametrize(("policy", "expected"), [
    ("report", ["downtime.micro_stop"]),
    ("summarize", []),
    ("ignore", []),
])
def test_micro_stop_policies(policy: str, expected: list[str]) -> None:
    run = Run(spec(micro_stops=policy))
    run.feed(0, state=1, good=0, fault=0)
    run.feed(10, state=3, fault=102)
    run.feed(11.5, state=1, good=5)
    assert [t for t in run.types() if t.startswith("downtime")] == expected
    confirmation = run.tick(100)[0].data
    if policy == "summarize":
        assert (confirmation["micro_stops"], confirmation["micro_stop_s"]) == (1, 1.5)
    else:
        assert "micro_stops" not in confirmation


def test_micro_stops_alone_still_reach_the_summary() -> None:
    run = Run(spec(micro_stops="summarize"))
    run.feed(0, state=1, good=0)
    run.feed(10, state=3)
    run.feed(11, state=1)
    assert run.tick(100)[0].data["micro_stops"] == 1


def test_reason_changes_during_a_downtime_are_carried_to_its_end() -> None:
    run = Run()
    run.feed(0, state=1, fault=0)
    run.feed(10, state=3, fault=101)
    run.tick(16)
    run.feed(20, fault=102)
    run.feed(25, fault=102)  # same code again: no change
    run.feed(30, state=1, fault=0)
    ended = run.events[-1]
    assert ended.data["reason_code"] == 101
    assert [c["reason_code"] for c in ended.data["reason_changes"]] == [102]


def test_without_a_reason_tag_the_default_reason_is_used() -> None:
    run = Run(spec(default_reason="unclassified"))
    run.feed(0, state=1)
    run.feed(10, state=3)
    started = run.tick(16)[0]
    assert (started.data["reason"], started.data["reason_code"]) == ("unclassified", None)


# ------------------------------------------------------------------ holds


def test_a_lot_change_under_hold_releases_the_old_lot_and_holds_the_new() -> None:
    run = Run()
    run.feed(0, lot="LOT-1", hold=False)
    raised = run.feed(5, hold=True)[0]
    swapped = run.feed(8, lot="LOT-2")
    assert [(e.type, e.data["lot"]) for e in swapped] == [
        ("quality.hold_released", "LOT-1"), ("quality.hold_raised", "LOT-2")]
    assert swapped[0].data["hold_id"] == raised.id
    assert swapped[1].data["hold_id"] == swapped[1].id


def test_a_lot_change_in_the_batch_that_clears_the_hold_releases_only() -> None:
    run = Run()
    run.feed(0, lot="LOT-1", hold=False)
    run.feed(5, hold=True)
    produced = run.feed(8, lot="LOT-2", hold=False)
    assert [e.type for e in produced] == ["quality.hold_released"]


# ------------------------------------------------------------------ maintenance


def test_a_fault_that_persists_requests_maintenance_once() -> None:
    run = Run(spec(fault_persists=60.0))
    run.feed(0, fault=101)
    assert run.tick(59) == []
    requested = run.tick(60)
    assert [e.type for e in requested] == ["maintenance.requested"]
    assert requested[0].data["trigger"] == "persists"
    assert run.tick(200) == []  # once per episode


def test_a_fault_that_repeats_within_the_window_requests_maintenance() -> None:
    run = Run(spec(fault_repeats=3, repeat_window=600.0))
    for t in (0, 100, 200):
        run.feed(t, fault=103)
        run.feed(t + 10, fault=0)
    requests = [e for e in run.events if e.type == "maintenance.requested"]
    assert len(requests) == 1
    assert (requests[0].data["occurrences"], requests[0].data["trigger"]) == (3, "repeats")


def test_repeats_spread_wider_than_the_window_do_not_count() -> None:
    run = Run(spec(fault_repeats=3, repeat_window=100.0))
    for t in (0, 150, 300):
        run.feed(t, fault=103)
        run.feed(t + 10, fault=0)
    assert "maintenance.requested" not in run.types()


# ------------------------------------------------------------------ production


def test_shift_changes_confirm_production_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # A 32-bit counter: it reaches 72,000, past what SPEC's 16-bit one can hold.
    run = Run(spec(shifts=((6, 0), (14, 0), (22, 0)), timezone="Europe/Berlin",
                   interval=1e9, counter_modulus={"good": 1 << 32, "scrap": None}))
    # The night of 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET.
    start = datetime(2026, 10, 24, 21, 0, tzinfo=berlin).timestamp()
    run.feed(start, good=0)
    t = start
    while t < start + 20 * 3600:
        t += 600
        run.feed(t, good=int(t - start))
    boundaries = [datetime.fromtimestamp(e.time, berlin).strftime("%H:%M")
                  for e in run.events if e.type == "production.confirmed"]
    assert boundaries == ["22:00", "06:00", "14:00"]
    assert {e.data["trigger"] for e in run.events} == {"shift_change"}
    # The counter runs at one part per second: the night shift 22:00-06:00 lasted nine real
    # hours that night, and its confirmation says so.
    night = [e for e in run.events if e.type == "production.confirmed"][1]
    assert night.data["good"] == 9 * 3600
    total = sum(e.data["good"] for e in run.events if e.type == "production.confirmed")
    run.state, final = apply_stop(run.spec, run.state, t, run.ctx)
    assert total + sum(e.data["good"] for e in final) == int(t - start)


def test_a_clean_stop_confirms_what_was_produced() -> None:
    run = Run()
    run.feed(0, wo="WO-1", good=0)
    run.feed(10, good=42)
    state, events = apply_stop(run.spec, run.state, 11, run.ctx)
    assert [(e.data["good"], e.data["trigger"]) for e in events] == [(42, "stop")]
    assert state.pending["good"] == 0


def test_parts_per_cycle_multiplies_counts() -> None:
    run = Run(spec(parts_per_cycle=4))
    run.feed(0, good=10)
    run.feed(5, good=13)
    assert run.tick(100)[0].data["good"] == 12


# ------------------------------------------------------------------ counters


@pytest.mark.parametrize(("policy", "good", "estimated"), [
    ("count_from_zero", 5, False),
    ("estimate", 5, True),
    ("ignore", 0, True),
])
def test_reset_policies(policy: str, good: int, estimated: bool) -> None:
    run = Run(spec(on_reset=policy, counter_modulus={"good": None, "scrap": None}))
    run.feed(0, good=1000)
    run.feed(5, good=5)  # the PLC reset its count and made five since
    data = run.tick(100)[0].data if good else None
    if data is None:
        assert run.state.pending["good"] == 0
        assert run.state.pending_estimated
        return
    assert (data["good"], data["estimated"]) == (good, estimated)


def test_a_configured_modulus_is_a_rollover_not_a_reset() -> None:
    run = Run(spec(counter_modulus={"good": 10000, "scrap": None}))
    run.feed(0, good=9990)
    run.feed(1, good=9995)
    run.feed(2, good=3)
    assert run.tick(100)[0].data["good"] == 13


def test_bad_quality_counter_samples_are_ignored() -> None:
    run = Run()
    run.feed(0, good=100)
    run.state, _ = apply_samples(run.spec, run.state, [Sample("plc", "good", 0, "bad", 1.0)],
                                 1.0, run.ctx)
    run.feed(2, good=103)
    assert run.tick(100)[0].data["good"] == 3


def test_a_counter_moved_to_another_tag_is_baselined_again() -> None:
    run = Run()
    run.feed(0, good=100)
    run.feed(5, good=120)
    moved = dataclasses.replace(SPEC, roles={**{k: v for k, v in SPEC.roles.items()
                                                 if v != "good"}, "plc.good2": "good"})
    after = Run(moved)
    after.state = run.state
    after.feed(10, good2=7)  # a different counter: no delta against the old tag's 120
    after.feed(15, good2=10)
    assert after.tick(200)[0].data["good"] == 20 + 3


def test_counter_snapshots_carry_absolute_values() -> None:
    run = Run(spec(snapshot_interval=60.0))
    snaps = [e for e in run.feed(0, good=100, scrap=7, wo="WO-1")
             if e.type == "counters.snapshot"]
    assert snaps[0].data == {"counters": {"good": 100, "scrap": 7}, "work_order": "WO-1"}
    assert [e for e in run.tick(30) if e.type == "counters.snapshot"] == []
    assert [e.type for e in run.tick(61)].count("counters.snapshot") == 1


# ------------------------------------------------------------------ telemetry


def test_telemetry_on_change_respects_deadband_and_min_interval() -> None:
    policy = TelemetryPolicy(on_change=True, deadband=0.5, min_interval=2.0)
    device = DeviceSpec("plc", {"plc.temp": policy})
    state = DeviceState()
    published = []
    for t, value in [(0, 20.0), (1, 20.4), (3, 20.4), (4, 21.0), (5, 30.0), (7, 30.1)]:
        state, events = apply_device_samples(device, state, [Sample("plc", "temp", value,
                                                                    "good", t)],
                                             t, Run().ctx)
        published += [(e.time, e.data["value"]) for e in events]
    # 30.0 at t=5 is held back by min_interval; 30.1 at t=7 is past it and goes out.
    assert published == [(0, 20.0), (4, 21.0), (7, 30.1)]
    events = apply_device_samples(device, state, [Sample("plc", "temp", 30.0, "bad", 9)],
                                  9, Run().ctx)[1]
    assert [(e.data["value"], e.data["quality"]) for e in events] == [(30.0, "bad")]
    assert events[0].lane.label == "telemetry"
    assert events[0].source.endswith("/plc")


def test_a_change_held_back_by_min_interval_goes_out_when_it_has_passed() -> None:
    device = DeviceSpec("plc", {"plc.temp": TelemetryPolicy(on_change=True, min_interval=5)})
    state, first = apply_device_samples(device, DeviceState(),
                                        [Sample("plc", "temp", 1, "good", 0)], 0, Run().ctx)
    state, held = apply_device_samples(device, state, [Sample("plc", "temp", 2, "good", 1)],
                                       1, Run().ctx)
    assert [e.data["value"] for e in first] == [1]
    assert held == []
    state, later = apply_device_samples(device, state, [], 5.0, Run().ctx)  # no new sample
    assert [(e.time, e.data["value"]) for e in later] == [(5.0, 2)]


def test_telemetry_every_interval_republishes_the_latest_value() -> None:
    device = DeviceSpec("plc", {"plc.temp": TelemetryPolicy(every=10.0)})
    state, events = apply_device_samples(device, DeviceState(),
                                         [Sample("plc", "temp", 5, "good", 0)], 0, Run().ctx)
    times = [e.time for e in events]
    for t in range(1, 35):
        state, events = apply_device_samples(device, state, [], float(t), Run().ctx)
        times += [e.time for e in events]
    assert times == [0, 10, 20, 30]


def test_telemetry_of_a_bound_tag_travels_under_the_asset() -> None:
    run = Run(spec(telemetry={"plc.good": TelemetryPolicy(on_change=True)}))
    run.feed(0, good=1)
    run.feed(1, good=2)
    telemetry = [e for e in run.events if e.type == "telemetry"]
    assert [e.data["value"] for e in telemetry] == [1, 2]
    assert telemetry[0].subject == "press-1"


def test_shift_start_helper_handles_the_spring_forward_gap() -> None:
    from agent.derive.production import last_shift_start

    berlin_spec = spec(shifts=((2, 30),), timezone="Europe/Berlin")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    noon = datetime(2026, 3, 29, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    start = datetime.fromtimestamp(last_shift_start(berlin_spec, noon), UTC)
    assert start == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST


@pytest.mark.parametrize(("protocol", "endpoint"), [
    ("modbus_tcp", "host: 127.0.0.1"), ("modbus_rtu", "port: /dev/ttyUSB0"),
    ("modbus_rtu_over_tcp", "host: 127.0.0.1")])
@pytest.mark.parametrize(("kind", "values"), [
    ("uint16", [65534, 65535, 0, 3]), ("int16", [32766, 32767, -32768, -32765])])
def test_a_counter_wraps_as_its_type_says_on_every_modbus_transport(
        protocol: str, endpoint: str, kind: str, values: list[int]) -> None:
    """65535 -> 0 on an RTU device was taken for a reset: a part lost, nothing flagged.
    A signed counter wraps at 2**16 as well."""
    from agent.derive import compile_assets
    from agent.settings import load_config_text

    config = load_config_text(f"""
site: s
agent: {{id: a}}
devices:
  - {{id: plc, protocol: {protocol}, {endpoint}, tags: [{{name: state, register: 40001}},
     {{name: good, register: 40002, type: {kind}}}]}}
assets:
  - {{id: press-1, state: {{tag: plc.state, map: {{1: running}}}}, counters: {{good: plc.good}},
     production: {{interval: 1h}}}}
""", "config.yaml", Path("."))
    [spec] = compile_assets(config)
    assert spec.counter_modulus["good"] == 1 << 16
    run = Run(spec)
    for t, value in enumerate(values):
        run.feed(float(t), good=value)
    [confirmed] = run.tick(7200)
    assert (confirmed.data["good"], confirmed.data["estimated"]) == (5, False)


# ------------------------------------------------------------------ readings no machine makes


def test_counter_readings_a_machine_cannot_make_are_held_back_and_never_booked() -> None:
    """Measured against hostile PLC servers: a Double 1e300 became good: 10**300, an Int64
    spike of 2**62 went through, a Boolean True was read as 1, taken as a reset."""
    run = Run(spec(counter_modulus={"good": None, "scrap": None}))
    run.feed(0, wo="WO-1", good=100)
    run.feed(1, good=102)  # two parts a second: the rate it learns
    run.feed(2, good=1e300)  # no count at all: nothing to baseline on
    run.feed(3, good=104)  # two more since 102
    run.feed(4, good=2**62)  # a count, but no machine makes that many in a second
    run.feed(5, good=106)  # back below the spike: that was the lie, start over here
    run.feed(6, good=True)
    run.feed(7, good=12.5)
    run.feed(8, good=108)
    [confirmed] = run.tick(100)
    assert confirmed.data["good"] == 2 + 2 + 2  # 100 -> 102 -> 104, 106 -> 108: no more
    assert confirmed.data["estimated"] is True  # the stretches around each lie are unknown
    assert [(h["tag"], h["value"], h["device"], h["at"]) for h in confirmed.data["held_back"]
            ] == [("plc.good", 1e300, "plc", "1970-01-01T00:00:02.000Z"),
                  ("plc.good", 2**62, "plc", "1970-01-01T00:00:04.000Z"),
                  ("plc.good", "True", "plc", "1970-01-01T00:00:06.000Z"),
                  ("plc.good", 12.5, "plc", "1970-01-01T00:00:07.000Z")]
    assert run.state.held_back == []  # reported once
    assert run.tick(300) == []


def test_a_real_jump_after_a_long_stop_still_counts() -> None:
    run = Run(spec(counter_modulus={"good": None, "scrap": None}))
    run.feed(0, good=0)
    run.feed(1, good=2)
    run.feed(3601, good=5002)  # an hour later: 5,000 parts at the rate seen is plausible
    run.tick(7200)
    confirmed = [e.data for e in run.events if e.type == "production.confirmed"]
    assert sum(c["good"] for c in confirmed) == 5002
    assert not any("held_back" in c for c in confirmed)


def test_a_configured_max_rate_holds_back_what_exceeds_it() -> None:
    run = Run(spec(counter_modulus={"good": None, "scrap": None}, max_rate=5.0))
    run.feed(0, good=0)
    run.feed(10, good=40)  # 4 parts/s
    run.feed(20, good=140)  # 10 parts/s: more than the machine can
    run.feed(30, good=180)
    run.tick(7200)
    confirmed = [e.data for e in run.events if e.type == "production.confirmed"]
    assert sum(c["good"] for c in confirmed) == 40 + 40
    assert [[(h["tag"], h["value"]) for h in c["held_back"]]
            for c in confirmed if "held_back" in c] == [[("plc.good", 140)]]


def test_a_telemetry_batch_carries_exactly_what_per_tag_events_would() -> None:
    """telemetry.events: batch changes the envelope, never the values: the same samples
    and ticks give, in order, the same (tag, value, quality, time) as per-tag events, in
    events of at most 500 values that fit the published schema."""
    import json
    import math

    import jsonschema
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agent.derive.emit import MAX_BATCH_VALUES, DeriveContext
    from agent.events import format_time

    schema = json.loads((Path(__file__).parent.parent / "docs" / "schemas"
                         / "floorlink.telemetry.batch.v1.json").read_text())
    tags = [f"t{n}" for n in range(600)]  # more than one batch's worth in a scan
    policies = {f"plc.{tag}": TelemetryPolicy(on_change=True, deadband=0.5 if n % 3 else None,
                                              every=5.0 if n % 7 == 0 else None)
                for n, tag in enumerate(tags)}
    device = DeviceSpec("plc", policies)
    values = st.sampled_from([0.0, 0.3, 1.0, 2.5, math.nan, math.inf])
    scans = st.lists(st.tuples(st.integers(1, 3), st.lists(
        st.tuples(st.sampled_from(tags), values), max_size=700)), min_size=1, max_size=6)

    def run(batch: bool, steps: list[tuple[int, list[tuple[str, float]]]]) -> list[tuple]:
        context = DeriveContext(site="s", agent="a", epoch=1, telemetry_batch=batch)
        state, at, out = DeviceState(), 0.0, []
        for pause, readings in steps:
            at += pause
            samples = [Sample("plc", tag, value, "good", at) for tag, value in readings]
            state, events = apply_device_samples(device, state, samples, at, context)
            for event in events:
                if not batch:
                    out.append((event.data["tag"], repr(event.data["value"]),
                                event.data["quality"], format_time(event.time)))
                    continue
                assert event.type == "telemetry.batch"
                assert 1 <= len(event.data["values"]) <= MAX_BATCH_VALUES
                jsonschema.validate(json.loads(event.to_json()), schema)
                out += [(v["tag"], repr(v["value"]), v["quality"], v["at"])
                        for v in event.data["values"]]
        return out

    @settings(max_examples=40, deadline=None)
    @given(scans)
    def same(steps: list[tuple[int, list[tuple[str, float]]]]) -> None:
        assert run(True, steps) == run(False, steps)

    same()
