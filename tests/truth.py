"""Ground truth from the simulator's own records; no floorlink code is used here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AssetTruth:
    good: int = 0
    scrap: int = 0
    downtimes: int = 0
    micro_stops: int = 0
    downtime_reasons: list[int] = field(default_factory=list)
    holds: int = 0
    hold_lots: list[str] = field(default_factory=list)
    ended: bool = False


def summarize(records: list[dict[str, Any]], micro_stop: float) -> dict[str, AssetTruth]:
    truth: dict[str, AssetTruth] = {}
    start: dict[str, dict[str, Any]] = {}
    down_since: dict[str, tuple[float, int]] = {}
    for rec in records:
        asset = rec["asset"]
        t = truth.setdefault(asset, AssetTruth())
        kind = rec["kind"]
        if kind == "start":
            start[asset] = rec
        elif kind == "state":
            if asset in down_since and rec["to"] != "down":
                began, fault = down_since.pop(asset)
                if rec["t"] - began >= micro_stop:
                    t.downtimes += 1
                    t.downtime_reasons.append(fault)
                else:
                    t.micro_stops += 1
            if rec["to"] == "down" and asset not in down_since:
                down_since[asset] = (rec["t"], rec["fault"])
        elif kind == "hold" and rec["active"]:
            t.holds += 1
            t.hold_lots.append(rec["lot"])
        elif kind == "end":
            t.good = rec["good"] - start[asset]["good"]
            t.scrap = rec["scrap"] - start[asset]["scrap"]
            t.ended = True
    return truth


def observed(events: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Per asset: counts of event types and summed quantities, from delivered events."""
    out: dict[str, Counter[str]] = {}
    for event in events:
        c = out.setdefault(event["subject"], Counter())
        kind = event["type"].removeprefix("floorlink.").removesuffix(".v1")
        c[kind] += 1
        if kind == "production.confirmed":
            c["good"] += event["data"]["good"]
            c["scrap"] += event["data"]["scrap"]
    return out


def counts_covered(truth: dict[str, AssetTruth], events: list[dict[str, Any]]) -> bool:
    """Whether the confirmations in `events` reach every asset's good and scrap count:
    the last confirmation is in (more would be a double count, which tests check apart)."""
    seen = observed(events)
    return all(seen.get(asset, {}).get("good", 0) >= t.good
               and seen.get(asset, {}).get("scrap", 0) >= t.scrap
               for asset, t in truth.items())
