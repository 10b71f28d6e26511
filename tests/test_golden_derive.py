"""Golden derivation cases: tests/cases/derive_*/ (config.yaml, samples.jsonl, expected.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from golden import run_case

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir()
               if (p / "samples.jsonl").exists())
SCHEMAS = Path(__file__).parent.parent / "docs" / "schemas"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(case: Path) -> None:
    expected = [json.loads(line) for line in (case / "expected.jsonl").read_text().splitlines()]
    actual = run_case(case)
    assert actual == expected
    for event in actual:
        jsonschema.validate(event, json.loads((SCHEMAS / f"{event['type']}.json").read_text()))


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 4
