"""One line per derived event, in the plant's words: what `floorlink demo` and
`floorlink run --watch` print while commissioning.

    19:37:27  press-2  downtime.started       Hydraulic pressure loss (code 101), work order WO-1001
"""

from __future__ import annotations

import time

from .events import Event


def print_event(event: Event) -> None:
    print(f"{time.strftime('%H:%M:%S', time.localtime(event.time))}  {event.subject:<8} "
          f"{event.type:<22} {describe(event)}", flush=True)


def describe(event: Event) -> str:
    d = event.data
    kind = event.type
    if kind == "machine.state_changed":
        after = f" after {d['previous_duration_s']:.1f}s" if d["previous_duration_s"] else ""
        return f"{d['previous_state'] or '(first seen)'} -> {d['state']}{after}"
    if kind == "downtime.started":
        return f"{d['reason']} (code {d['reason_code']}), work order {d['work_order']}"
    if kind == "downtime.ended":
        return f"{d['duration_s']:.1f}s of {d['reason']}, work order {d['work_order']}"
    if kind == "production.confirmed":
        stops = f", {d['micro_stops']} micro-stops" if d.get("micro_stops") else ""
        return (f"+{d['good']} good +{d['scrap']} scrap -> {d['work_order']} totals "
                f"{d['good_total']} good / {d['scrap_total']} scrap{stops}")
    if kind == "quality.hold_raised":
        return f"HOLD lot {d['lot']}: {d['reason']} (work order {d['work_order']})"
    if kind == "quality.hold_released":
        return f"released lot {d['lot']}"
    if kind == "maintenance.requested":
        return (f"{d['reason']} (code {d['fault_code']}) {d['occurrences']} times "
                f"since {d['first_seen'][11:19]}")
    if kind == "downtime.micro_stop":
        return f"{d['duration_s']:.1f}s of {d['reason']}"
    if kind == "telemetry":
        quality = "" if d.get("quality") == "good" else f" (quality {d.get('quality')})"
        return f"{d['name']} = {d['value']!r}{quality}"
    if kind == "telemetry.batch":
        values = d["values"]
        shown = ", ".join(f"{v['name']} = {v['value']!r}" for v in values[:3])
        return shown + (f" and {len(values) - 3} more" if len(values) > 3 else "")
    if kind == "counters.snapshot":
        counters = " ".join(f"{name} {value}" for name, value in d["counters"].items())
        return f"{counters}, work order {d.get('work_order')}"
    return str(d)
