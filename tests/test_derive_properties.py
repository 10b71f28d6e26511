"""Property tests of derivation against a model of the PLC, with hypothesis."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_derive import SPEC, Run

from agent.derive import AssetState, apply_samples, apply_stop
from agent.events import format_time
from drivers.base import Sample

MODULUS = 1 << 16
COUNTER_SPEC = dataclasses.replace(SPEC, counter_modulus={"good": MODULUS, "scrap": None},
                                   interval=50.0)

operation = st.one_of(
    st.tuples(st.just("make"), st.integers(0, 8)),   # parts made before the next look
    st.tuples(st.just("observe"), st.just(0)),
    st.tuples(st.just("reset"), st.just(0)),         # the PLC's count goes back to zero
    st.tuples(st.just("gap"), st.integers(0, 3000)),  # we stop seeing; parts made meanwhile
    st.tuples(st.just("restart"), st.just(0)),       # agent restart: state saved and restored
    st.tuples(st.just("bad"), st.just(0)),           # a bad-quality sample with garbage
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, MODULUS - 1), st.lists(operation, max_size=80), st.data())
def test_counters_are_exact_where_observable_and_flagged_where_not(
        start: int, operations: list[tuple[str, int]], data: st.DataObject) -> None:
    """The model states the documented rules, independently of the code:

    * between two readings with nothing hidden, the count is exact, rollovers included
      (readings are close enough that a wrap is a plausible step: at most 10 parts);
    * a reset between two readings is exact when the next reading shows the drop;
    * across a gap or a restart, a rise is exact, and a drop (a reset or wrap we did not
      see) counts only the value read, flagged `estimated`.

    Parts made before a reset and after the last reading are never observable; neither is
    a reset that the counter climbs back over before the next reading, or one right at the
    top of the range (indistinguishable from a rollover). The model does not generate those.
    """
    run = Run(COUNTER_SPEC)
    t = 0.0
    counter = start
    run.feed(t, good=counter)
    last_seen = counter
    made = 0  # observable parts since the last reading
    reset = False
    blind = False  # a gap or restart since the last reading: the next sample has after_gap
    expected = 0
    inexact = False

    def look() -> None:
        nonlocal last_seen, made, reset, blind, expected, inexact, t
        if reset:
            assume(counter < last_seen)  # otherwise the reset left no trace
        if not blind:
            assume(made <= 10)
        t += 1
        run.feed(t, gap=blind, good=counter)
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
        elif kind == "restart":
            run.state = AssetState.from_json(run.state.to_json())
            blind = True
        elif kind == "bad":
            t += 1
            run.state, _ = apply_samples(run.spec, run.state,
                                         [Sample("plc", "good", "garbage", "bad", t)], t, run.ctx)
        run.tick(t + 0.5)
    look()
    run.state, final = apply_stop(run.spec, run.state, t + 1, run.ctx)
    confirmations = [e for e in [*run.events, *final] if e.type == "production.confirmed"]
    assert sum(e.data["good"] for e in confirmations) == expected
    assert any(e.data["estimated"] for e in confirmations) == inexact


segment = st.tuples(st.sampled_from(["running", "down", "idle"]),
                    st.integers(1, 200).map(lambda tenths: tenths / 10))


@settings(max_examples=300, deadline=None)
@given(st.lists(segment, min_size=1, max_size=40), st.sets(st.integers(0, 39)))
def test_downtimes_cover_exactly_the_long_down_periods_and_never_overlap(
        segments: list[tuple[str, float]], restarts: set[int]) -> None:
    codes = {"running": 1, "idle": 2, "down": 3}
    micro_stop = SPEC.micro_stop
    run = Run()
    t = 0.0
    truth: list[tuple[float, float]] = []
    down_since: float | None = None
    previous: str | None = None
    for index, (state, length) in enumerate(segments):
        if state != previous:
            if state == "down":
                down_since = t
            elif previous == "down" and down_since is not None:
                if t - down_since >= micro_stop:
                    truth.append((down_since, t))
                down_since = None
        previous = state
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
    open_down = down_since is not None and t - down_since >= micro_stop
    started = {e.id: e.data["started_at"] for e in run.events if e.type == "downtime.started"}
    ended = [(e.data["downtime_id"], e.data["started_at"], e.data["ended_at"])
             for e in run.events if e.type == "downtime.ended"]
    assert [(s, e) for _, s, e in ended] == [(format_time(a), format_time(b)) for a, b in truth]
    assert all(started[i] == s for i, s, _ in ended)  # each end pairs with its start
    assert len(started) == len(truth) + (1 if open_down else 0)  # an open one is not lost
    # What was emitted never overlaps (RFC 3339 UTC strings sort as times).
    emitted = sorted((start, end) for _, start, end in ended)
    assert all(end1 <= start2 for (_, end1), (start2, _) in itertools.pairwise(emitted))
