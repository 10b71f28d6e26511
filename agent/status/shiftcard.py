"""The shift's pictures on the status page, per asset: a state timeline (this shift and
the one before), OEE and its parts, parts per hour, and the downtime Pareto.

SVG and CSS only: no script, nothing from elsewhere (the CSP forbids both, the plant
network has no internet). Hovering over a segment or a bar, or a long tap on a phone,
shows its times, reason and work order through SVG <title>.
"""

from __future__ import annotations

import time
import zlib
from html import escape
from typing import Any

COLOURS = {"running": "#1b7f3b", "idle": "#9aa0a6", "setup": "#1a73e8",
           "planned_stop": "#5f6368", "unknown": "#a142f4", "micro_stop": "#f29900",
           "no_data": "#c4c7cc"}
DOWN_COLOURS = ("#b3261e", "#e8710a", "#7b1fa2", "#a50e0e", "#d81b60", "#795548")
LABELS = {"running": "running", "idle": "idle", "down": "down", "setup": "setup",
          "planned_stop": "planned stop", "unknown": "unknown code",
          "micro_stop": "micro-stop", "no_data": "no data"}
WIDTH = 1000  # the SVG's own units; it scales to the card

STYLE = """
.shift .cards{grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr))}
.shift svg{width:100%;display:block} .shift svg.line{height:26px} .shift svg.line.past{height:14px}
.shift svg.bars{height:80px}
.ticks{display:flex;justify-content:space-between;font-size:11px;color:var(--mute)}
.oee{font-size:15px;margin:4px 0 8px} .oee b{font-size:20px}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12px;color:var(--mute);margin:4px 0}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
.pareto{width:100%;border-collapse:collapse;font-size:14px}
.pareto td{padding:2px 6px 2px 0;vertical-align:middle}
.pareto .bar{height:10px;background:var(--bad);min-width:2px}
.shift h4{font-size:13px;color:var(--mute);margin:10px 0 4px;font-weight:600}
"""


def shift_section(shifts: dict[str, Any]) -> str:
    if not shifts:
        return ""
    cards = [_card(asset, views) for asset, views in shifts.items()]
    return (f"<section id=shift class=shift><h2>Shift</h2><div class=cards>{''.join(cards)}"
            "</div></section>")


def _card(asset: str, views: dict[str, Any]) -> str:
    current, before = views["current"], views["previous"]
    parts = [f"<article class=card><h3><span class=id>{escape(asset)}</span> "
             f"<span class=mute>· shift from {escape(current['label'])}</span></h3>",
             _oee(current),
             _timeline(current, "this shift"),
             _timeline(before, f"shift from {escape(before['label'])}", past=True),
             _legend(current, before),
             _hours(current),
             _pareto(current),
             "</article>"]
    return "".join(parts)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _oee(view: dict[str, Any]) -> str:
    made = f"{view['good']} good, {view['scrap']} scrap"
    no_data = view["seconds"].get("no_data", 0)
    gap = (f"<br><span class=warn>no data for {_minutes(no_data)}</span>"
           if no_data >= 60 else "")
    if view["oee"] is None:
        return (f"<p class=oee>availability <b>{_pct(view['availability'])}</b> · quality "
                f"<b>{_pct(view['quality'])}</b> · {made}<br><span class=mute>OEE needs the "
                f"asset's oee.ideal_cycle</span>{gap}</p>")
    return (f"<p class=oee>OEE <b>{_pct(view['oee'])}</b> = availability "
            f"{_pct(view['availability'])} &times; performance {_pct(view['performance'])} &times; "
            f"quality {_pct(view['quality'])} · {made}{gap}</p>")


def _timeline(view: dict[str, Any], title: str, past: bool = False) -> str:
    start, end = float(view["start"]), float(view["end"])
    span = max(end - start, 1.0)
    rects = []
    known = min((float(s["start"]) for s in view["timeline"]), default=float(view["until"]))
    if known > start:
        rects.append(_rect(start, known, start, span, "no_data", None, None))
    for s in view["timeline"]:
        rects.append(_rect(float(s["start"]), float(s["end"]), start, span, str(s["state"]),
                           s.get("reason"), s.get("work_order")))
    # Stretched to the card's width at a fixed height: time runs left to right.
    return (f"<h4>{title}</h4><svg class='line{' past' if past else ''}' viewBox='0 0 {WIDTH} "
            f"10' preserveAspectRatio=none role=img aria-label='{escape(title)} timeline'>"
            f"<rect width='{WIDTH}' height='10' fill='#f8f9fa' stroke='#dadce0'/>"
            f"{''.join(rects)}</svg>"
            f"<div class=ticks><span>{_hhmm(start)}</span><span>{_hhmm(end)}</span></div>")


def _rect(begin: float, finish: float, origin: float, span: float, state: str,
          reason: str | None, work_order: str | None) -> str:
    x = (begin - origin) / span * WIDTH
    width = max((finish - begin) / span * WIDTH, 0.5)
    colour = _down_colour(reason) if state == "down" else COLOURS.get(state, "#a142f4")
    what = LABELS.get(state, state) + (f": {reason}" if reason else "")
    order = f" (work order {work_order})" if work_order else ""
    return (f"<rect x='{x:.1f}' width='{width:.1f}' height='10' fill='{colour}'>"
            f"<title>{_hhmm(begin)}&ndash;{_hhmm(finish)} {escape(what)}{escape(order)}, "
            f"{_minutes(finish - begin)}</title></rect>")


def _down_colour(reason: str | None) -> str:
    return DOWN_COLOURS[zlib.crc32((reason or "").encode()) % len(DOWN_COLOURS)]


def _legend(*views: dict[str, Any]) -> str:
    seen: dict[str, str] = {}
    for view in views:
        for s in view["timeline"]:
            state = str(s["state"])
            if state == "down":
                reason = s.get("reason") or "no reason given"
                seen.setdefault(f"down: {reason}", _down_colour(s.get("reason")))
            else:
                seen.setdefault(LABELS.get(state, state), COLOURS.get(state, "#a142f4"))
    if any(view["seconds"].get("no_data", 0) for view in views):
        seen.setdefault("no data", COLOURS["no_data"])
    items = "".join(f"<span><i style='background:{colour}'></i>{escape(label)}</span>"
                    for label, colour in seen.items())
    return f"<div class=legend>{items}</div>"


def _hours(view: dict[str, Any]) -> str:
    hours = view["parts_per_hour"]
    if not hours:
        return "<h4>Parts per hour</h4><p class=mute>none confirmed yet</p>"
    top = max(h["good"] + h["scrap"] for h in hours) or 1
    slots = max(len(hours), 8)  # a shift's hours; one bar never fills the card
    step = WIDTH / slots
    bars = []
    for n, h in enumerate(hours):
        good_h, scrap_h = h["good"] / top * 100, h["scrap"] / top * 100
        x = n * step + step * 0.1
        bars.append(
            f"<g><title>{_hhmm(h['hour'])}: {h['good']} good, {h['scrap']} scrap</title>"
            f"<rect x='{x:.1f}' y='{100 - good_h - scrap_h:.1f}' width='{step * 0.8:.1f}' "
            f"height='{good_h:.1f}' fill='#1b7f3b'/><rect x='{x:.1f}' "
            f"y='{100 - scrap_h:.1f}' width='{step * 0.8:.1f}' height='{scrap_h:.1f}' "
            f"fill='#b3261e'/></g>")
    last = hours[0]["hour"] + slots * 3600
    return (f"<h4>Parts per hour (good, scrap; most {top})</h4><svg class=bars viewBox='0 0 "
            f"{WIDTH} 100' preserveAspectRatio=none role=img aria-label='parts per hour'>"
            f"{''.join(bars)}</svg><div class=ticks><span>{_hhmm(hours[0]['hour'])}</span>"
            f"<span>{_hhmm(last)}</span></div>")


def _pareto(view: dict[str, Any]) -> str:
    reasons = view["downtime_by_reason"]
    if not reasons:
        return "<h4>Downtime by reason</h4><p class=mute>no downtime this shift</p>"
    top = max(r["minutes"] for r in reasons.values()) or 1
    rows = "".join(
        f"<tr><td>{escape(reason)}</td><td>{_minutes(r['minutes'] * 60)}</td>"
        f"<td>{int(r['count'])}&times;</td><td style='width:35%'><div class=bar "
        f"style='width:{r['minutes'] / top * 100:.0f}%'></div></td></tr>"
        for reason, r in reasons.items())
    return f"<h4>Downtime by reason</h4><table class=pareto>{rows}</table>"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))
