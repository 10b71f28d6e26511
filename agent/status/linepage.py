"""The operators' page at /line: one HTML document, no scripts, made to be used with gloves
on a dirty phone or tablet. Big buttons; the stops newest first; an unclassified stop
shows its reasons at once, a classified one behind "Change". Times are the asset's local
time (production.timezone), as the shift knows them.

Every form on one rendering carries the same one-time token: after a post the page is
rendered anew, with a new token, so the same post sent again is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

MIN_SPLIT_S = 10.0  # a stop shorter than this is not offered a split: too short to matter


@dataclass(frozen=True)
class PartView:
    number: int
    start: float
    end: float | None
    reason: str
    by: str


@dataclass(frozen=True)
class StopView:
    id: str
    start: float
    end: float | None
    reason: str  # what the ERP has now: the operator's, else the PLC's
    by: str | None  # who gave it; None: the PLC (or nobody)
    unclassified: bool  # neither the PLC nor anyone at the line said why
    parts: tuple[PartView, ...] = ()


@dataclass(frozen=True)
class AssetView:
    id: str
    timezone: str
    reasons: tuple[tuple[int, str, str | None], ...]  # code, text, group
    stops: tuple[StopView, ...] = field(default=())


_STYLE = """
*{box-sizing:border-box}
body{font:18px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#111;background:#eef0f3;overflow-wrap:break-word}
header{display:flex;gap:12px;align-items:center;justify-content:space-between;
 padding:10px 14px;background:#1f2933;color:#fff}
header h1{font-size:20px;margin:0}
main{padding:8px;max-width:900px;margin:auto}
.flash{padding:14px;border-radius:10px;margin:8px 0;font-weight:700;font-size:20px}
.flash.ok{background:#d7f5df;color:#0b5d23}.flash.error{background:#fde2e0;color:#8c1d18}
section{background:#fff;border-radius:12px;margin:10px 0;padding:10px 12px}
h2{font-size:22px;margin:2px 0 8px}
.stop{border:3px solid #c9ced6;border-radius:12px;padding:10px;margin:10px 0}
.stop.todo{border-color:#c77700;background:#fff8ec}
.when{font-size:20px;font-weight:700}.what{margin:4px 0 8px}
.mute{color:#555;font-size:16px}
fieldset{border:0;padding:0;margin:6px 0}
legend{font-weight:700;color:#444;margin:4px 0}
.reasons{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
button{font:inherit;font-weight:700;min-height:60px;padding:10px 12px;border-radius:10px;
 border:2px solid #1f2933;background:#fff;color:#111;width:100%;touch-action:manipulation}
button.go{background:#1f2933;color:#fff}
header button{min-height:48px;width:auto;background:#fff}
details{margin-top:8px}
summary{display:inline-block;font-weight:700;padding:14px 16px;border:2px solid #1f2933;
 border-radius:10px;min-height:56px;cursor:pointer;list-style:none;margin:4px 4px 0 0}
summary::-webkit-details-marker{display:none}
label{display:block;margin:10px 0 4px;font-weight:700}
input,select{font:inherit;font-size:20px;min-height:56px;width:100%;padding:8px;
 border:2px solid #1f2933;border-radius:10px;background:#fff}
a.refresh{display:block;text-align:center;padding:16px;font-weight:700;color:#1f2933}
.pin{max-width:420px;margin:10vh auto}
"""


def page(person: str, assets: list[AssetView], token: str, now: float,
         flash: tuple[str, str] | None = None) -> str:
    shown = (f'<p class="flash {flash[0]}" role=status>{escape(flash[1])}</p>'
             if flash else "")
    body = "".join(_asset(a, token, now) for a in assets) or (
        "<section><p>No assets are assigned to you. Ask the shift lead.</p></section>")
    return _document(
        "Line: stops",
        '<header><h1>Stops</h1><form method=post action="/line/logout">'
        f'<input type=hidden name=csrf value="{token}">'
        f'<button type=submit>{escape(person)}: log out</button></form></header>'
        f'<main>{shown}{body}<a class=refresh href="/line">Refresh</a></main>')


def pin_form(message: str = "") -> str:
    shown = f'<p class="flash error" role=alert>{escape(message)}</p>' if message else ""
    return _document(
        "Line: log in",
        '<main class=pin><section><h2>Stops at the line</h2>'
        f'{shown}<form method=post action="/line/login">'
        '<label for=pin>Your PIN or badge</label>'
        '<input id=pin name=pin type=password inputmode=numeric autocomplete=off '
        'required autofocus maxlength=64>'
        '<p><button class=go type=submit>Log in</button></p></form></section></main>')


def _document(title: str, body: str) -> str:
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _asset(asset: AssetView, token: str, now: float) -> str:
    stops = "".join(_stop(asset, stop, token, now) for stop in asset.stops) or (
        '<p class=mute>No stops this shift or the one before.</p>')
    return f"<section><h2>{escape(asset.id)}</h2>{stops}</section>"


def _stop(asset: AssetView, stop: StopView, token: str, now: float) -> str:
    zone = ZoneInfo(asset.timezone)
    until = stop.end if stop.end is not None else now
    short = until - stop.start < 120  # seconds on the clock, or both ends read alike
    when = (f"{_clock(stop.start, zone, now, short)} to {_clock(stop.end, zone, now, short)}"
            if stop.end is not None
            else f"since {_clock(stop.start, zone, now, short)}, going on")
    head = (f'<div class=when>{when}, {_minutes(until - stop.start)}</div>')
    hidden = (f'<input type=hidden name=csrf value="{token}">'
              f'<input type=hidden name=asset value="{escape(asset.id)}">'
              f'<input type=hidden name=downtime value="{escape(stop.id)}">')
    if not asset.reasons:
        return (f'<div class=stop>{head}<div class=what>{escape(stop.reason)}</div>'
                '<p class=mute>No reasons are set up for this asset.</p></div>')
    if stop.parts and len(stop.parts) == 2:
        body = "".join(_part(asset, stop, part, hidden, zone, now) for part in stop.parts)
    elif stop.unclassified:
        body = (f'<div class=what>Reason: <b>{escape(stop.reason)}</b></div>'
                + _reason_form(asset, hidden, 1, "Why did it stop?"))
    else:
        who = f" (given by {escape(stop.by)})" if stop.by else " (from the machine)"
        body = (f'<div class=what>Reason: <b>{escape(stop.reason)}</b>'
                f'<span class=mute>{who}</span></div>'
                + _details("Change", _reason_form(asset, hidden, 1, "The right reason")))
    if stop.end is not None and stop.end - stop.start >= MIN_SPLIT_S:
        body += _details("Split in two", _split_form(asset, stop, hidden, zone))
    todo = " todo" if stop.unclassified else ""
    return f'<div class="stop{todo}" id="stop-{escape(stop.id)}">{head}{body}</div>'


def _part(asset: AssetView, stop: StopView, part: PartView, hidden: str, zone: ZoneInfo,
          now: float) -> str:
    end = part.end if part.end is not None else stop.end
    short = end is not None and end - part.start < 120
    span = f"{_clock(part.start, zone, now, short)} to {_clock(end, zone, now, short)}"
    return (f'<div class=what>Part {part.number}, {span}: <b>{escape(part.reason)}</b>'
            f'<span class=mute> (given by {escape(part.by)})</span></div>'
            + _details(f"Change part {part.number}",
                       _reason_form(asset, hidden, part.number, "The right reason")))


def _reason_form(asset: AssetView, hidden: str, part: int, legend: str) -> str:
    groups: dict[str | None, list[str]] = {}
    for code, text, group in asset.reasons:
        groups.setdefault(group, []).append(
            f'<button type=submit name=code value="{code}">{escape(text)}</button>')
    sets = "".join(
        f'<fieldset><legend>{escape(group or legend)}</legend>'
        f'<div class=reasons>{"".join(buttons)}</div></fieldset>'
        for group, buttons in groups.items())
    return (f'<form method=post action="/line/classify">{hidden}'
            f'<input type=hidden name=part value="{part}">{sets}</form>')


def _split_form(asset: AssetView, stop: StopView, hidden: str, zone: ZoneInfo) -> str:
    assert stop.end is not None
    options = "".join(f'<option value="{code}">{escape(text)}</option>'
                      for code, text, _ in asset.reasons)
    middle = stop.start + (stop.end - stop.start) / 2
    default = datetime.fromtimestamp(middle, zone).strftime("%H:%M:%S")
    return (f'<form method=post action="/line/split">{hidden}'
            '<label>Until (local time)'
            f'<input type=time step=1 name=at value="{default}" required></label>'
            f'<label>it stopped for<select name=code>{options}</select></label>'
            f'<label>then for<select name=second_code>{options}</select></label>'
            '<p><button class=go type=submit>Split</button></p></form>')


def _details(label: str, inner: str) -> str:
    return f"<details><summary>{escape(label)}</summary>{inner}</details>"


def _clock(at: float | None, zone: ZoneInfo, now: float, seconds: bool = False) -> str:
    if at is None:
        return "now"
    moment = datetime.fromtimestamp(at, zone)
    today = datetime.fromtimestamp(now, zone).date()
    shown = "%H:%M:%S" if seconds else "%H:%M"
    return moment.strftime(shown if moment.date() == today else f"%a {shown}")


def _minutes(seconds: float) -> str:
    minutes = max(seconds, 0) / 60
    if minutes < 1:
        return f"{max(seconds, 0):.0f} s"
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes // 60:.0f} h {minutes % 60:.0f} min"
