"""A backlog in the ERP's words: what the upstream does not have yet, by kind of record.

    2 downtime starts, 1 production confirmation and 1 quality hold not yet in Odoo,
    oldest 4 min
"""

from __future__ import annotations

import time
from typing import Any

# Event type -> (one, many), in the words of the people who read the ERP.
NOUNS = {
    "downtime.started": ("downtime start", "downtime starts"),
    "downtime.ended": ("downtime end", "downtime ends"),
    "downtime.micro_stop": ("micro-stop", "micro-stops"),
    "production.confirmed": ("production confirmation", "production confirmations"),
    "quality.hold_raised": ("quality hold", "quality holds"),
    "quality.hold_released": ("hold release", "hold releases"),
    "maintenance.requested": ("maintenance request", "maintenance requests"),
    "machine.state_changed": ("state change", "state changes"),
    "counters.snapshot": ("counter snapshot", "counter snapshots"),
}
# The order a plant manager asks in: holds and downtime before the rest.
ORDER = ["quality.hold_raised", "downtime.started", "downtime.ended", "production.confirmed",
         "maintenance.requested", "quality.hold_released", "downtime.micro_stop",
         "machine.state_changed", "counters.snapshot"]


def where(uplink_type: str, target: str) -> str:
    return {"odoo": "in Odoo", "mqtt": "at the broker"}.get(uplink_type, f"at {target}")


def counted(by_type: dict[str, dict[str, Any]]) -> str:
    """"2 downtime starts, 1 production confirmation and 1 quality hold"."""
    kinds = sorted(by_type, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    parts = []
    for kind in kinds:
        count = int(by_type[kind]["count"])
        one, many = NOUNS.get(kind, (f"{kind} event", f"{kind} events"))
        parts.append(f"{count} {one if count == 1 else many}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def missing(impact: dict[str, Any] | None, uplink_type: str, target: str,
            now: float | None = None) -> str | None:
    """What the upstream is still missing, or None when it has everything."""
    pending = (impact or {}).get("pending") or {}
    if not pending:
        return None
    now = time.time() if now is None else now
    oldest = min(float(entry["oldest_at"]) for entry in pending.values())
    return (f"{counted(pending)} not yet {where(uplink_type, target)}, oldest "
            f"{_age(now - oldest)}")


def refused(impact: dict[str, Any] | None, uplink_type: str, target: str) -> str | None:
    """What the upstream refused and waits as dead letters, with the reasons."""
    dead = (impact or {}).get("dead") or {}
    if not dead:
        return None
    reasons = sorted({reason for entry in dead.values() for reason in entry["reasons"]})
    shown = "; ".join(reasons[:3])
    return f"{counted(dead)} refused {where(uplink_type, target)}: {shown}"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
