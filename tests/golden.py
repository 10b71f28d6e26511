"""Run a golden derivation case: config.yaml + samples.jsonl -> events, deterministically.

samples.jsonl lines are either a sample
    {"t": 10.0, "device": "plc", "tag": "state", "value": 3, "quality": "good", "gap": false}
(samples with the same "t" form one batch) or a tick {"t": 12.0, "tick": true}, or the
agent stopping cleanly {"t": 99.0, "stop": true}. The agent's clock equals "t".
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from agent.derive import (
    AssetState,
    DeriveContext,
    apply_samples,
    apply_stop,
    apply_tick,
    compile_assets,
)
from agent.settings import load_config_text
from agent.shared import Sample


def run_case(case: Path) -> list[dict[str, Any]]:
    config = load_config_text((case / "config.yaml").read_text(), "config.yaml", case)
    specs = compile_assets(config)
    counter = itertools.count(1)
    ctx = DeriveContext(site=config.site, agent=config.agent.id, epoch=1,
                        new_id=lambda: f"00000000-0000-7000-8000-{next(counter):012d}")
    states = {spec.id: AssetState() for spec in specs}
    events: list[dict[str, Any]] = []
    lines = [json.loads(line) for line in (case / "samples.jsonl").read_text().splitlines()
             if line.strip()]
    for t, group in itertools.groupby(lines, key=lambda line: float(line["t"])):
        entries = list(group)
        samples = [Sample(e["device"], e["tag"], e["value"], e.get("quality", "good"), t,
                          e.get("gap", False)) for e in entries if "tag" in e]
        for spec in specs:
            if samples:
                mine = [s for s in samples if f"{s.device}.{s.tag}" in spec.roles]
                states[spec.id], produced = apply_samples(spec, states[spec.id], mine, t, ctx)
                events += [e.to_cloudevent() for e in produced]
            if any(e.get("tick") for e in entries):
                states[spec.id], produced = apply_tick(spec, states[spec.id], t, ctx)
                events += [e.to_cloudevent() for e in produced]
            if any(e.get("stop") for e in entries):
                states[spec.id], produced = apply_stop(spec, states[spec.id], t, ctx)
                events += [e.to_cloudevent() for e in produced]
    return events
