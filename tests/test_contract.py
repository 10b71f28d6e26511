"""The published event contract: schemas are current and what derivation emits fits them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from test_derive import Run

from agent.contract import all_event_schemas
from agent.derive import DeriveContext
from agent.events import format_time

SCHEMA_DIR = Path(__file__).parent.parent / "docs" / "schemas"


def test_published_event_schemas_are_current() -> None:
    published = {p.name: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
    assert published == all_event_schemas(), "run scripts/generate-schemas"


def test_every_emitted_event_fits_its_schema() -> None:
    run = Run(context=DeriveContext(site="s", agent="a", epoch=1))  # real UUIDv7 ids
    run.feed(0, state=1, fault=0, wo="WO-1", good=10, scrap=0, lot="L1", hold=False)
    run.feed(5, state=3, fault=101, good=20)
    run.tick(12)
    run.feed(13, state=1, hold=True)
    run.feed(14, hold=False, wo="WO-2", good=25)
    run.feed(15, state=9)  # a code with no mapping: state "unknown"
    run.tick(200)
    emitted = {e.type for e in run.events}
    assert emitted >= {"machine.state_changed", "downtime.started", "downtime.ended",
                       "production.confirmed", "quality.hold_raised", "quality.hold_released"}
    for event in run.events:
        document = json.loads(event.to_json())
        jsonschema.validate(document, json.loads(
            (SCHEMA_DIR / f"{document['type']}.json").read_text()))


def test_the_encoder_refuses_non_finite_numbers_anywhere() -> None:
    """JSON has no NaN or Infinity. The encoder must refuse them, never write them nor
    turn them into null behind our back: a later JSON library must keep this."""
    import pytest

    from agent.events import Event, Lane

    for bad in (float("nan"), float("inf"), float("-inf")):
        for data in ({"value": bad}, {"nested": {"list": [1, bad]}}):
            event = Event(id="e", type="telemetry", source="floorlink://s/a/d", subject="d",
                          time=0.0, lane=Lane.TELEMETRY, sequence=1, epoch=1, data=data)
            with pytest.raises(ValueError, match="JSON compliant"):
                event.to_json()


def test_a_non_finite_plc_value_is_published_as_null_with_quality_bad() -> None:
    import dataclasses
    import math

    from test_derive import SPEC

    from agent.derive.spec import TelemetryPolicy

    spec = dataclasses.replace(SPEC, telemetry={"plc.temp": TelemetryPolicy(on_change=True)})
    run = Run(spec, DeriveContext(site="s", agent="a", epoch=1))  # real UUIDv7 ids
    for t, value in enumerate([20.5, math.inf, math.inf, math.nan, math.nan, 21.0, -math.inf]):
        run.feed(float(t), temp=value)
    published = [(e.data["value"], e.data["quality"], e.data.get("quality_reason"))
                 for e in run.events if e.type == "telemetry"]
    assert published == [(20.5, "good", None), (None, "bad", "not finite"),
                         (None, "bad", "not finite"), (21.0, "good", None),
                         (None, "bad", "not finite")]
    for event in run.events:
        document = json.loads(event.to_json(), parse_constant=lambda c: 1 / 0)
        jsonschema.validate(document, json.loads(
            (SCHEMA_DIR / f"{document['type']}.json").read_text()))


def test_the_fast_encoder_writes_what_the_standard_library_writes() -> None:
    """orjson writes the bodies; for every document the standard library can write, the
    parsed result must be the same, and what it refuses must still be refused - NaN
    hidden behind a null elsewhere in the body included."""
    import math

    import pytest
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agent.events import _STDLIB_ENCODE, encode_body

    scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats() | st.text())
    documents = st.dictionaries(st.text() | st.integers(), st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4), max_leaves=12), max_size=6)

    @settings(max_examples=300, deadline=None)
    @given(documents)
    def same(document: dict[object, object]) -> None:
        try:
            expected = _STDLIB_ENCODE(document)
        except ValueError:
            with pytest.raises(ValueError, match="JSON compliant"):
                encode_body(document)  # type: ignore[arg-type]
            return
        body = encode_body(document)  # type: ignore[arg-type]
        assert json.loads(body) == json.loads(expected)

    same()
    # The case the null scan exists for: a legitimate null beside a non-finite number.
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_body({"classified_by": None, "data": {"value": [1.0, math.nan]}})


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False)
       | st.integers(0, 4_000_000_000_000).map(lambda micros: micros / 1e6 + 5e-7))
@settings(max_examples=3000)
def test_event_times_read_as_datetime_reads_the_same_instant(epoch: float) -> None:
    """The fast split of format_time rounds as datetime.fromtimestamp does, half a
    microsecond and a thousandth edges included."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert format_time(epoch) == expected
