"""Property tests of derivation against a model of the PLC, with hypothesis."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_derive import SPEC, Run

from agent.derive import AssetState, apply_samples, apply_stop
from agent.events import format_time
from agent.shared import Sample

MODULUS = 1 << 16
COUNTER_SPEC = dataclasses.replace(SPEC, counter_modulus={"good": MODULUS, "scrap": MODULUS},
                                   interval=50.0)

operation = st.one_of(
    st.tuples(st.just("make"), st.integers(0, 8)),   # parts made before the next look
    st.tuples(st.just("observe"), st.just(0)),
    st.tuples(st.just("reset"), st.just(0)),         # the PLC's count goes back to zero
    # We stop seeing; parts made meanwhile, up to several rollovers' worth.
    st.tuples(st.just("gap"), st.integers(0, 3 * MODULUS)),
    st.tuples(st.just("restart"), st.just(0)),       # agent restart: state saved and restored
    st.tuples(st.just("bad"), st.just(0)),           # a bad-quality sample with garbage
)


@pytest.mark.parametrize("role", ["good", "scrap"])
@settings(max_examples=200, deadline=None)
@given(st.integers(0, MODULUS - 1), st.lists(operation, max_size=80), st.data())
def test_counters_are_exact_where_observable_and_flagged_where_not(
        role: str, start: int, operations: list[tuple[str, int]], data: st.DataObject) -> None:
    """The model states the documented rules, independently of the code:

    * between two readings with nothing hidden, the count is exact, rollovers included
      (readings are close enough that a wrap is a plausible step: at most 10 parts);
    * a reset between two readings is exact when the next reading shows the drop;
    * across a gap or a restart, a rise is exact, and a drop (a reset or wrap we did not
      see) counts only the value read, flagged `estimated`.

    Parts made before a reset and after the last reading are never observable; neither is
    a reset that the counter climbs back over before the next reading, nor rollovers in a gap
    that bring the counter back above its last reading (a full range or more), nor a reset
    right at the top of the range (it reads as a rollover). The model does not make those.
    """
    run = Run(COUNTER_SPEC)
    t = 0.0
    counter = start
    run.feed(t, **{role: counter})
    last_seen = counter
    made = 0  # observable parts since the last reading
    reset = False
    blind = False  # a gap or restart since the last reading: the next sample has after_gap
    expected = 0
    inexact = False

    def look() -> None:
        nonlocal last_seen, made, reset, blind, expected, inexact, t
        if reset or (blind and last_seen + made >= MODULUS):
            assume(counter < last_seen)  # otherwise the reset or the wraps left no trace
        if not blind:
            assume(made <= 10)
        t += 1
        run.feed(t, gap=blind, **{role: counter})
        if blind and counter < last_seen:
            inexact = True
            expected += counter
        else:
            expected += made
        last_seen, made, reset, blind = counter, 0, False, False

    for kind, amount in operations:
        if kind == "make":
            counter = (counter + amount) % MODULUS
            made += amount
        elif kind == "observe":
            look()
        elif kind == "reset":
            assume(blind or last_seen < MODULUS - 100)
            counter, made, reset = 0, 0, True
        elif kind == "gap":
            if data.draw(st.booleans(), label="reset inside the gap"):
                counter, made, reset = 0, 0, True
            counter = (counter + amount) % MODULUS
            made += amount
            blind = True
            t += amount / 10  # as long as a machine takes to make them (10 parts/s)
        elif kind == "restart":
            run.state = AssetState.from_json(run.state.to_json())
            blind = True
        elif kind == "bad":
            t += 1
            run.state, produced = apply_samples(
                run.spec, run.state, [Sample("plc", role, "garbage", "bad", t)], t, run.ctx)
            run.events += produced  # a confirmation may fall due right then
        run.tick(t + 0.5)
    look()
    run.state, final = apply_stop(run.spec, run.state, t + 1, run.ctx)
    confirmations = [e for e in [*run.events, *final] if e.type == "production.confirmed"]
    assert sum(e.data[role] for e in confirmations) == expected
    assert any(e.data["estimated"] for e in confirmations) == inexact


segment = st.tuples(st.sampled_from(["running", "down", "idle"]),
                    st.integers(1, 200).map(lambda tenths: tenths / 10))


def committed_transitions(segments: list[tuple[str, float]], dwell: float
                          ) -> tuple[list[tuple[float, str]], float]:
    """The model of dwell filtering: a change counts, from its start, if it lasts `dwell`."""
    merged: list[list[object]] = []
    t = 0.0
    for state, length in segments:
        if merged and merged[-1][0] == state:
            merged[-1][2] = float(merged[-1][2]) + length  # type: ignore[arg-type]
        else:
            merged.append([state, t, length])
        t += length
    transitions = [(0.0, str(merged[0][0]))]
    for state, start, length in merged[1:]:
        if state != transitions[-1][1] and float(length) >= dwell:  # type: ignore[arg-type]
            transitions.append((float(start), str(state)))  # type: ignore[arg-type]
    return transitions, t


@settings(max_examples=300, deadline=None)
@given(st.lists(segment, min_size=1, max_size=40), st.sets(st.integers(0, 39)),
       st.sampled_from([0.0, 0.55, 2.05]))
def test_downtimes_cover_exactly_the_long_down_periods_and_never_overlap(
        segments: list[tuple[str, float]], restarts: set[int], dwell: float) -> None:
    # Thresholds sit off the 0.1 s grid of the segments, so no length equals one exactly
    # (where float rounding, not the rules, would decide).
    codes = {"running": 1, "idle": 2, "down": 3}
    micro_stop = 5.05
    run = Run(dataclasses.replace(SPEC, min_dwell=dwell, micro_stop=micro_stop))
    transitions, end_time = committed_transitions(segments, dwell)
    truth: list[tuple[float, float]] = []
    for (start, state), (stop, _) in itertools.pairwise([*transitions, (end_time, "")]):
        if state == "down" and stop - start >= micro_stop and stop < end_time:
            truth.append((start, stop))
    last_start, last_state = transitions[-1]
    # A stop still open at the end is started once it has lasted micro_stop on the agent's
    # clock, which starts when min_dwell accepted the state: up to `dwell` after the PLC's
    # change (with a tick's second of slack). In between, either answer is right.
    open_for = end_time - last_start if last_state == "down" else 0.0
    open_down = open_for >= micro_stop + dwell + 1.0
    maybe_open = micro_stop <= open_for < micro_stop + dwell + 1.0
    t = 0.0
    for index, (state, length) in enumerate(segments):
        run.feed(t, state=codes[state])
        end = t + length
        tick = t
        while tick + 1 < end:  # the writer ticks on its own, about every second
            tick += 1
            run.tick(tick)
        t = end
        if index in restarts:
            run.state = AssetState.from_json(run.state.to_json())
    run.tick(t)
    started = {e.id: e.data["started_at"] for e in run.events if e.type == "downtime.started"}
    ended = [(e.data["downtime_id"], e.data["started_at"], e.data["ended_at"])
             for e in run.events if e.type == "downtime.ended"]
    assert [(s, e) for _, s, e in ended] == [(format_time(a), format_time(b)) for a, b in truth]
    assert all(started[i] == s for i, s, _ in ended)  # each end pairs with its start
    if maybe_open:
        assert len(started) in (len(truth), len(truth) + 1)
    else:
        assert len(started) == len(truth) + (1 if open_down else 0)  # an open one is not lost
    # What was emitted never overlaps (RFC 3339 UTC strings sort as times).
    emitted = sorted((start, end) for _, start, end in ended)
    assert all(end1 <= start2 for (_, end1), (start2, _) in itertools.pairwise(emitted))
    states = [e.data["state"] for e in run.events if e.type == "machine.state_changed"]
    assert states == [state for _, state in transitions]


SCAN = st.fixed_dictionaries({}, optional={
    "state": st.sampled_from([1, 2, 3]),
    "good": st.integers(0, 3),     # parts made since the scan before
    "scrap": st.integers(0, 1),
    "fault": st.sampled_from([0, 101, 102]),
    "hold": st.booleans(),
    "lot": st.sampled_from(["L-1", "L-2"]),
    "wo": st.sampled_from(["WO-1", "WO-2", "WO-3"]),
})
CLOCK_FIELDS = {"interval_start", "interval_end"}  # taken from the agent's clock


@settings(max_examples=300, deadline=None)
@given(st.lists(SCAN, min_size=1, max_size=40), st.data())
def test_how_scans_are_cut_into_batches_never_changes_an_event(
        scans: list[dict[str, object]], data: st.DataObject) -> None:
    """A PLC's scans, each stamped with its own source time, reach derivation in batches
    (one OPC UA publish may carry several scans). However they are cut, each batch
    applied at one `now`, every event says the same, apart from the agent's clock."""
    spec = dataclasses.replace(SPEC, micro_stop=0.0, interval=1e9,
                               counter_modulus={"good": None, "scrap": None})
    totals = {"good": 0, "scrap": 0}
    reads: list[list[Sample]] = []
    for n, scan in enumerate(scans):
        t = 1000.0 + n
        read = []
        for tag, value in scan.items():
            if tag in totals:
                totals[tag] += int(value)  # type: ignore[call-overload]
                value = totals[tag]
            read.append(Sample("plc", tag, value, "good", t))
        reads.append(read)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(reads) - 1)))))

    def derive(batches: list[list[Sample]]) -> list[tuple[str, dict[str, object]]]:
        run = Run(spec)
        for batch in batches:
            if batch:
                run.state, produced = apply_samples(spec, run.state, batch,
                                                    batch[-1].source_time, run.ctx)
                run.events += produced
        return [(e.type, {k: v for k, v in e.data.items()
                          if k not in CLOCK_FIELDS and not k.endswith("_id")})
                for e in run.events]

    one_by_one = derive(reads)  # each scan on its own
    bounds = [0, *cuts, len(reads)]
    batched = derive([[s for read in reads[a:b] for s in read]
                      for a, b in itertools.pairwise(bounds)])
    assert batched == one_by_one


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4]), st.integers(0, 40),
                          st.sampled_from([0, 101, 102]), st.booleans(),
                          st.one_of(st.floats(), st.integers(-2**70, 2**70), st.text(),
                                    st.lists(st.floats(), max_size=3))),
                min_size=1, max_size=25))
def test_the_state_written_by_orjson_reads_back_as_the_standard_library_would(
        steps: list[tuple[int, int, int, bool, object]]) -> None:
    """Derivation state is written through orjson for speed. What it writes must parse to
    what the standard library wrote before, and a NaN or infinite PLC value in a telemetry
    memory (which orjson would turn into null) must come back as itself after a restart."""
    import json
    import math

    from agent.derive import DeviceSpec, DeviceState, apply_device_samples
    from agent.derive.spec import TelemetryPolicy
    from agent.derive.state import _fields

    run = Run(dataclasses.replace(SPEC, telemetry={"plc.temp": TelemetryPolicy(
        on_change=True)}))
    device = DeviceSpec("plc", {"plc.raw": TelemetryPolicy(on_change=True)})
    device_state, good = DeviceState(), 0
    for t, (state, step, fault, hold, value) in enumerate(steps):
        good += step
        run.feed(float(t), state=state, good=good, fault=fault, hold=hold, temp=value)
        device_state, _ = apply_device_samples(
            device, device_state, [Sample("plc", "raw", value, "good", float(t))], t, run.ctx)
        for written in (run.state, device_state):
            standard = json.dumps(written, default=_fields, separators=(",", ":"))
            text = written.to_json()
            if "NaN" in standard or "Infinity" in standard:
                assert text == standard  # orjson would have lost them: not used
            else:
                assert json.loads(text) == json.loads(standard)
            again = type(written).from_json(text)
            for ref, memory in written.telemetry.items():
                back = again.telemetry[ref].value
                if isinstance(memory.value, float) and math.isnan(memory.value):
                    assert isinstance(back, float)
                    assert math.isnan(back)
                elif memory.value is not None and not isinstance(memory.value, list):
                    assert back == memory.value
