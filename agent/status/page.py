"""The technician's page: one self-contained HTML document rendered from the snapshot.

No scripts, fonts or stylesheets from elsewhere (the plant network has no
internet); it reloads itself; it reads on a phone. What is wrong comes first.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from html import escape
from typing import Any

from .shiftcard import STYLE as SHIFT_STYLE
from .shiftcard import shift_section

REFRESH_SECONDS = 5

_STYLE = """
:root{--ok:#1b7f3b;--bad:#b3261e;--warn:#9a6700;--mute:#5f6368;--line:#dadce0}
*{box-sizing:border-box}
body{font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#202124;background:#f6f7f9;overflow-wrap:break-word}
header{padding:12px 16px;color:#fff;background:var(--ok)}
header.alarm{background:var(--bad)} header.attention{background:var(--warn)}
header h1{font-size:20px;margin:0} header p{margin:4px 0 0}
main{padding:8px 12px;max-width:1100px;margin:auto}
section{background:#fff;border:1px solid var(--line);border-radius:8px;margin:10px 0;
 padding:8px 12px;min-width:0}
h2{font-size:16px;margin:4px 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,320px),1fr));
 gap:8px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 10px;min-width:0}
.card h3{font-size:15px;margin:0 0 6px}
dl{display:grid;grid-template-columns:minmax(0,max-content) minmax(0,1fr);gap:3px 12px;
 margin:0}
dt{color:var(--mute);font-size:13px} dd{margin:0;min-width:0}
.id{white-space:nowrap} .id.long{white-space:normal;overflow-wrap:anywhere}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
.warn{color:var(--warn);font-weight:600}.mute{color:var(--mute)}
ul.alarms{margin:0;padding-left:18px} ul.alarms li{margin:6px 0}
footer{color:var(--mute);font-size:12px;padding:8px 16px 24px;text-align:center}
"""


def _build(agent: dict[str, Any]) -> str:
    """The package and its commit on an installed box; the version in a checkout."""
    if agent.get("package"):
        return f"{agent['package']} ({str(agent.get('commit') or 'commit unknown')[:12]})"
    return str(agent["version"])


def render(snapshot: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    agent = snapshot["agent"]
    alarms = snapshot["alarms"]
    critical = [a for a in alarms if a.get("severity") == "critical"]
    # One truth for what is wrong: the header counts the alarm list below, which holds a
    # device down, an uplink away, dead letters, the buffer, the clock and certificates.
    problems = len(alarms)
    # Not the .bad/.warn text colours: the header is coloured by its background.
    tone = ("alarm" if critical or not agent["healthy"]
            else "attention" if problems else "")
    if not agent["healthy"]:
        headline = "Agent not running"
    elif problems:
        headline = f"{problems} problem{'s' if problems != 1 else ''}"
    else:
        headline = "All good"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<meta http-equiv=refresh content={REFRESH_SECONDS}>",
        f"<title>floorlink {escape(agent['site'])}/{escape(agent['id'])}: {headline}</title>",
        f"<style>{_STYLE}{SHIFT_STYLE}</style></head><body>",
        f'<header class="{tone}"><h1>{escape(headline)}</h1>',
        f"<p>floorlink {escape(_build(agent))} · site {escape(agent['site'])} · agent "
        f"{escape(agent['id'])} · up {_duration(agent['uptime_s'])}</p></header><main>",
        _alarms(alarms),
        _assets(snapshot["assets"], now),
        shift_section(snapshot.get("shifts") or {}),
        _devices(snapshot["devices"]),
        _uplinks(snapshot["uplinks"], now),
        _buffer(snapshot["buffer"]),
        _clock_and_certificates(snapshot["clock"], snapshot["certificates_expiring"]),
        f"</main><footer>updated {escape(_clock(now))} · refreshes every {REFRESH_SECONDS} s"
        " · <a href=/status>JSON</a> · <a href=/metrics>metrics</a></footer></body></html>",
    ]
    return "".join(parts)


def _alarms(alarms: list[dict[str, Any]]) -> str:
    if not alarms:
        return '<section id=alarms><h2>Alarms</h2><p class=ok>No alarms</p></section>'
    items = "".join(
        f'<li><span class="{"bad" if a.get("severity") == "critical" else "warn"}">'
        f'{_id(str(a["key"]))}</span>: {escape(str(a.get("message") or ""))}</li>'
        for a in alarms)
    return f'<section id=alarms><h2>Alarms</h2><ul class=alarms>{items}</ul></section>'


def _assets(assets: dict[str, Any], now: float) -> str:
    cards = []
    for name, asset in assets.items():
        downtime = asset["open_downtime"]
        hold = asset["open_hold"]
        if asset.get("no_data_since"):
            # The last state read is not the machine's state now: say what is known.
            state = f'<span class=warn>no data since {_hhmm(asset["no_data_since"])}</span>'
        else:
            state = (f'<span class="{_STATE_TONES.get(str(asset["state"]), "warn")}">'
                     f'{escape(str(asset["state"] or "?"))}</span>')
        stopped = "none"
        if downtime:
            reason = escape(str(downtime.get("reason") or "no reason yet"))
            stopped = (f"<span class=bad>{reason}</span> for "
                       f"{_duration(now - downtime['started_at'])}")
        cards.append(_card(_id(name), [
            ("State", state),
            ("Downtime", stopped),
            ("Hold", (f'<span class=bad>lot {escape(str(hold.get("lot") or "?"))}</span>: '
                      f'{escape(str(hold.get("reason") or ""))}') if hold else "none"),
            ("Work order", escape(str(asset["work_order"] or "—")))]))
    return _cards("assets", "Assets", cards, "no assets configured")


_STATE_TONES = {"running": "ok", "down": "bad", "fault": "bad"}


def _device_error(d: dict[str, Any]) -> str:
    """The last error with its time, or the tags that answer with an error."""
    if d.get("last_error"):
        at = d.get("last_error_at")
        return f'{d["last_error"]} (at {at})' if at else str(d["last_error"])
    errors = d.get("tag_errors") or {}
    if errors:
        return "; ".join(f"{tag}: {why}" for tag, why in sorted(errors.items())[:5]) + (
            f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
    return "—"


def _devices(devices: list[dict[str, Any]]) -> str:
    cards = [_card(_id(d["device"]), [
        ("Connection", f'<span class="{"ok" if d["state"] == "up" else "bad"}">'
                       f'{escape(d["state"])}</span> <span class=mute>'
                       f'{escape(d["protocol"])}</span>'),
        ("Last sample", _ago(d.get("last_sample_age_s"))),
        ("Last error", f'<span class="{"bad" if d["state"] != "up" else "mute"}">'
                       f'{escape(_device_error(d))}</span>')]) for d in devices]
    return _cards("devices", "Devices", cards, "no devices configured")


def _cluster(u: dict[str, Any]) -> str:
    """A broker cluster: which node is in use, and the last move between nodes."""
    nodes = " ".join(f"<b>{escape(s)}</b>" if s == u["target"] else escape(s)
                     for s in u["servers"])
    moves = u.get("failovers", 0)
    text = f'{nodes} <span class=mute>{moves} failover{"" if moves == 1 else "s"}'
    recent = u.get("recent_failovers") or []
    if recent:
        last = recent[-1]
        after = last.get("resumed_after_s")
        text += (f', last {escape(str(last["at"]))}: {escape(str(last["from"]))} → '
                 f'{escape(str(last["to"]))}' + (f", {after} s without a broker"
                                                 if after is not None else ""))
    return text + "</span>"


def _uplinks(uplinks: list[dict[str, Any]], now: float) -> str:
    cards = []
    for u in uplinks:
        state = ("paused" if u.get("alarm") else "connected" if u["connected"]
                 else "disconnected")
        age = u.get("oldest_pending_age_s")
        rows = [("State", f'<span class="{"ok" if state == "connected" else "bad"}">{state}'
                          f'</span> <span class=mute>{escape(u["type"])} '
                          f'{_id(u["target"])}</span>'),
                ("Backlog", f'{u.get("backlog", "?")}'
                            + (f" (oldest {_duration(age)})" if age is not None else "")),
                ("Dead letters", str(u.get("dead_letters_stored", u["dead_lettered"])))]
        if u.get("servers"):
            rows.append(("Servers", _cluster(u)))
        if u.get("missing"):
            rows.append(("Missing", f'<span class=warn>{escape(u["missing"])}</span>'))
        if u.get("refused"):
            rows.append(("Refused", f'<span class=bad>{escape(u["refused"])}</span>'))
        if u.get("credentials_accepted_at"):
            rows.append(("Key accepted", escape(str(u["credentials_accepted_at"]))))
        if state != "connected" and u.get("next_attempt_at"):
            rows.append(("Next try", escape(str(u["next_attempt_at"]))))
        trouble = u["alarm"] or u["last_error"]
        if trouble:
            rows.append(("Last error", f'<span class=mute>{escape(trouble)}</span>'))
        cards.append(_card(_id(u["uplink"]), rows))
    return _cards("uplinks", "Uplinks", cards, "no uplinks configured")


def _buffer(buffer: dict[str, Any] | None) -> str:
    if buffer is None:
        return "<section id=buffer><h2>Buffer</h2><p class=mute>not open yet</p></section>"
    limits = buffer.get("limits", {})
    fill = buffer.get("fill")
    fill_text = f"{fill * 100:.0f}% of the hard limit" if fill is not None else ""
    tone = "bad" if fill is not None and fill >= 0.9 else "warn" if fill and fill >= 0.7 else ""
    return _section("buffer", "Buffer", [
        ("File", _id(buffer["path"])),
        ("Size", f'{_bytes(buffer["file_bytes"])} on disk, {_bytes(buffer["used_bytes"])} '
                 f'used, {buffer["events"]} events <span class="{tone}">{fill_text}</span>'),
        ("Limits", escape(", ".join(_limit(k, v) for k, v in limits.items()) or "none"))])


_LIMIT_LABELS = {"size_bytes": "telemetry trimmed above", "hard_bytes": "hard limit",
                 "telemetry_age_s": "telemetry kept for",
                 "reserve_bytes": "disk space held in reserve"}


def _limit(name: str, value: float) -> str:
    label = _LIMIT_LABELS.get(name, name)
    if not value:
        return f"{label}: none"
    if name.endswith("_bytes"):
        return f"{label} {_bytes(value)}"
    if name.endswith("_s"):
        return f"{label} {_duration(value)}"
    return f"{label} {value}"


def _clock_and_certificates(clock: dict[str, Any], certificates: list[dict[str, Any]]) -> str:
    synced = clock.get("synchronized")
    state = ("unknown" if synced is None else '<span class=ok>synchronised</span>' if synced
             else '<span class=bad>NOT synchronised</span>')
    rows = [("System clock", f'{state} <span class=mute>({escape(str(clock["source"]))})'
                             f'</span>')]
    for device, offset in clock.get("opcua_servers", {}).items():
        text = "not measured yet" if offset is None else (
            f'<span class="{"warn" if abs(offset) > 1 else "ok"}">{offset:+.3f} s</span>')
        rows.append((f"OPC UA {_id(device)}", f"server clock offset {text}"))
    if certificates:
        for cert in certificates:
            rows.append((
                "Certificate", f'<span class=warn>{escape(str(cert["subject"]))} '
                f'({escape(str(cert["uplink"]))}, {escape(str(cert["which"]))}) expires '
                f'{escape(str(cert["not_after"]))}, in {cert["days_left"]} days</span>'))
    else:
        rows.append(("Certificates", "<span class=ok>none expire within 30 days</span>"))
    return _section("clock", "Clock and certificates", rows)


def _cards(anchor: str, title: str, cards: list[str], empty: str) -> str:
    """Cards that stack on a phone and sit side by side on a wide screen: nothing scrolls
    sideways at 360 px, and what is wrong is never in a column cut off to the right."""
    if not cards:
        return f"<section id={anchor}><h2>{title}</h2><p class=mute>{empty}</p></section>"
    return (f"<section id={anchor}><h2>{title}</h2><div class=cards>{''.join(cards)}</div>"
            "</section>")


def _card(title: str, rows: list[tuple[str, str]]) -> str:
    return f"<article class=card><h3>{title}</h3>{_dl(rows)}</article>"


def _section(anchor: str, title: str, rows: list[tuple[str, str]]) -> str:
    return f"<section id={anchor}><h2>{title}</h2>{_dl(rows)}</section>"


def _dl(rows: list[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return f"<dl>{items}</dl>"


_SEPARATORS = re.compile(r"([-._/:@])")


def _id(text: str) -> str:
    """An id, escaped. A short one never breaks ("press-/1" on a phone); a long one may
    wrap, after its separators first."""
    if len(text) <= 24:
        return f"<span class=id>{escape(text)}</span>"
    parts = _SEPARATORS.split(text)
    return "<span class='id long'>" + "".join(
        escape(p) + ("<wbr>" if _SEPARATORS.fullmatch(p) else "") for p in parts) + "</span>"


def _hhmm(iso: str) -> str:
    """An RFC 3339 UTC time as this box's local HH:MM (with the date if not today)."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    if moment.date() == datetime.now().astimezone().date():
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def _ago(age: float | None) -> str:
    if age is None:
        return '<span class=mute>never</span>'
    return f"{_duration(age)} ago"


def _duration(seconds: float) -> str:
    whole = int(max(0.0, float(seconds)) + 0.5)  # rounded once: never "3 min 60 s"
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def _bytes(value: float) -> str:
    """Decimal units, as the configuration takes them: `1GB` shows as 1.0 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(value)


def _clock(now: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
