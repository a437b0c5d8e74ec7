"""sapd's pages as HTML text: the directory and one session. Pure: data in, text out.

Everything that came from the network goes through ``esc``. The pages are complete
without JavaScript (the table, search, filters and paging are the server's); the
scripts under assets/ only add live updates and the copy button.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from sapd import sdp, streaminfo
from sapd.history import Step
from sapd.plumbing.html import esc, page
from sapd.records import SessionRecord

LIMITS = (25, 50, 100, 250)
MEDIA_KINDS = ("audio", "video", "application", "text", "message")
FILTERS = ("text", "media", "group", "source", "origin", "scope", "site", "clock",
           "redundant", "local", "stale")
NAV = '<nav><a href="/">Sessions</a><a href="/v1/conflicts">Conflicts</a>' \
      '<a href="/v1">API</a></nav>'


def ago(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "-"
    seconds = max(0, int(now - stamp))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def state_of(session: dict[str, Any]) -> str:
    return "local" if session["local"] else ("stale" if session["stale"] else "live")


def heard_via_text(session: dict[str, Any]) -> str:
    """``sap 239.255.255.255 on eth0 from 10.0.0.5``, one per way it was heard."""
    parts = []
    for via in session.get("heard_via") or ():
        text = str(via.get("via", "?"))
        if via.get("group"):
            text += f" {via['group']}"
        if via.get("interface"):
            text += f" on {via['interface']}"
        if via.get("url"):  # RAVENNA: where the SDP was described
            text += f" {via['url']}"
        parts.append(text)
    return "; ".join(parts) or "-"


def media_text(session: dict[str, Any]) -> str:
    media = " ".join(session.get("media") or ())
    codecs = ", ".join(session.get("codecs") or ())
    return f"{media} · {codecs}" if media and codecs else (media or codecs or "-")


def source_text(session: dict[str, Any]) -> str:
    origin, source = session.get("origin_address"), session.get("source")
    return str(source) if origin == source else f"{origin} via {source}"


def row(session: dict[str, Any], now: float) -> str:
    """One table row; directory.js builds the same cells from the same JSON."""
    state = state_of(session)
    flags = '<span class="badge conflict">conflict</span>' if session.get("conflict") else ""
    if session.get("redundant"):
        flags += '<span class="badge">2022-7</span>'
    if session.get("verified"):  # the signer was checked (sapd.trust), not just present
        flags += '<span class="badge">signed</span>'
    sid = esc(session["id"])
    return (f'<tr id="s-{sid}" data-id="{sid}">'
            f'<td><a href="/sessions/{sid}">{esc(session["name"])}</a>{flags}</td>'
            f'<td class="mono">{esc(", ".join(session["groups"]) or "-")}</td>'
            f"<td>{esc(media_text(session))}</td>"
            f'<td class="mono">{esc(source_text(session))}</td>'
            f'<td>{esc(session["scope"] or "-")}</td>'
            f'<td>{esc(session.get("site") or "-")}</td>'
            f"<td>{esc(heard_via_text(session))}</td>"
            f'<td class="num" data-first-seen="{session["first_seen"]}">'
            f'{esc(ago(session["first_seen"], now))}</td>'
            f'<td class="state-{state}">{state}</td></tr>')


def _input(name: str, label: str, value: str | None, placeholder: str = "") -> str:
    return (f'<label>{esc(label)}<input name="{name}" value="{esc(value or "")}" '
            f'placeholder="{esc(placeholder)}"></label>')


def _select(name: str, label: str, value: str | None,
            options: list[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{esc(v)}"{" selected" if v == (value or "") else ""}>'
                   f"{esc(text)}</option>" for v, text in options)
    return f'<label>{esc(label)}<select name="{name}">{opts}</select></label>'


def query_string(params: dict[str, str], **changes: Any) -> str:
    merged = {k: v for k, v in {**params, **{k: str(v) for k, v in changes.items()}}.items()
              if v not in ("", "None")}
    return urllib.parse.urlencode(merged)


def directory(result: dict[str, Any], params: dict[str, str], scopes: list[str],
              now: float) -> str:
    """The directory page: filters (a GET form), the table, paging, exports."""
    form = ('<form class="filters" method="get" action="/">'
            + _input("text", "Name or info", params.get("text"), "search")
            + _select("media", "Media", params.get("media"),
                      [("", "any"), *((k, k) for k in MEDIA_KINDS)])
            + _input("group", "Group", params.get("group"), "239.69.1.1")
            + _input("source", "Source", params.get("source"))
            + _select("scope", "Scope", params.get("scope"),
                      [("", "any"), *((s, s or "unscoped") for s in scopes)])
            + _input("site", "Site", params.get("site"), "any")
            + _input("clock", "PTP clock", params.get("clock"), "grandmaster id")
            + _select("redundant", "ST 2022-7", params.get("redundant"),
                      [("", "any"), ("1", "redundant"), ("0", "single")])
            + _select("local", "Origin", params.get("local"),
                      [("", "any"), ("true", "announced here"), ("false", "heard")])
            + _select("limit", "Rows", params.get("limit", "100"),
                      [(str(n), str(n)) for n in LIMITS])
            + '<button type="submit">Search</button></form>')
    sessions = result["sessions"]
    offset, limit = result["offset"], result["limit"]
    total = f"{result['total']}{'' if result['total_exact'] else '+'}"
    shown = (f"{offset + 1}\u2013{offset + len(sessions)} of {total}" if sessions
             else f"none of {total}")
    links = []
    if offset > 0:
        previous = query_string(params, offset=max(0, offset - limit))
        links.append(f'<a rel="prev" href="/?{esc(previous)}">« previous</a>')
    more = offset + len(sessions) < result["total"] or not result["total_exact"]
    if more and len(sessions) == limit:
        following = query_string(params, offset=offset + limit)
        links.append(f'<a rel="next" href="/?{esc(following)}">next »</a>')
    filters = query_string({k: v for k, v in params.items() if k in FILTERS})
    exports = (f'<a href="/v1/playlist.m3u?{esc(filters)}" download>Playlist (M3U)</a>'
               f'<a href="/v1/sessions?{esc(query_string(params))}">JSON</a>')
    pager = (f'<div class="pager"><span id="shown">{esc(shown)}</span>{"".join(links)}'
             f'{exports}<span id="live" hidden>live</span></div>')
    header = "".join(f"<th>{h}</th>" for h in (
        "Name", "Groups", "Media", "Source", "Scope", "Site", "Heard via", "Age", "State"))
    body = "".join(row(s, now) for s in sessions)
    empty = "" if sessions else '<p id="empty">No sessions match.</p>'
    table = (f'<table id="sessions" data-query="{esc(query_string(params))}">'
             f"<thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>{empty}")
    return page("sapd — sessions", form + pager + table, scripts=["directory.js"], nav=NAV)


def _fields(pairs: list[tuple[str, object]]) -> str:
    return '<dl class="fields">' + "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>"
        for k, v in pairs) + "</dl>"


def _attr(attributes: tuple[sdp.Attribute, ...], name: str) -> list[str]:
    return [a.value or "" for a in attributes if a.name == name]


def media_rows(description: sdp.SessionDescription) -> str:
    """Per media: what a receiver needs (connection, codecs, ptime, clocks, mid, source
    filters); session-level clocks and filters apply where a media has none."""
    rows = []
    top = description.attributes
    for m in description.media:
        connections = m.connections or description.connections
        conn = ", ".join(f"{c.address}" + (f"/{c.ttl}" if c.ttl is not None else "")
                         for c in connections)
        codecs = ", ".join(
            f"{c.payload_type} {c.encoding}/{c.clock_rate}"
            + (f" ({c.parameters} ch)" if c.parameters and m.kind == "audio" else
               (f"/{c.parameters}" if c.parameters else ""))
            for c in m.codecs) or " ".join(m.formats)
        ptime = ", ".join(_attr(m.attributes, "ptime") or _attr(top, "ptime")) or "-"
        refclk = ", ".join(_attr(m.attributes, "ts-refclk") or _attr(top, "ts-refclk")) or "-"
        mediaclk = ", ".join(_attr(m.attributes, "mediaclk") or _attr(top, "mediaclk")) or "-"
        mid = ", ".join(_attr(m.attributes, "mid")) or "-"
        filters = "; ".join(_attr(m.attributes, "source-filter")
                            or _attr(top, "source-filter")) or "-"
        cells = (m.kind, f"{m.port}" + (f"/{m.port_count}" if m.port_count > 1 else ""),
                 m.protocol, conn or "-", codecs, ptime, refclk, mediaclk, mid, filters)
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in (
        "Media", "Port", "Protocol", "Connection", "Codecs", "ptime", "PTP clock (ts-refclk)",
        "Media clock", "mid", "Source filter"))
    return (f'<table id="media"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def redundancy_text(description: sdp.SessionDescription) -> str:
    """ST 2022-7 legs: each mid of a=group:DUP with its media's destination."""
    legs = streaminfo.redundancy((a.name, a.value) for a in description.attributes)
    if legs is None:
        return "none (no a=group:DUP)"
    by_mid = {}
    for m in description.media:
        for mid in _attr(m.attributes, "mid"):
            connections = m.connections or description.connections
            by_mid[mid] = f"{connections[0].address}:{m.port}" if connections else f":{m.port}"
    return "; ".join(f"{mid} → {by_mid.get(mid, 'no media with this mid')}"
                     for mid in legs["mids"])


def signature_text(record: SessionRecord) -> str:
    """What the trust policy found (sapd.trust), never more than it checked."""
    if record.verification == "valid":
        return f"verified, signed by {record.signed_by}"
    if record.verification == "signed_here":
        return f"signed here by {record.signed_by}"
    if record.verification in ("", "not_checked"):
        return "signed, not checked (no [trust] policy for it)" if record.auth_tag \
            else "unsigned"
    if record.verification == "unsigned":
        return "unsigned"
    return f"not verified ({record.verification})"


def session(record: SessionRecord, info: dict[str, Any],
            description: sdp.SessionDescription | None, problems: list[str],
            history: list[Step], now: float) -> str:
    """One session: its fields, parsed SDP, raw SDP with copy and download, history."""
    state = state_of(info)
    clock = info.get("clock")
    fields: list[tuple[str, object]] = [
        ("Name", record.name), ("Info", record.info), ("ID", record.id),
        ("State", state + (" — conflicts with another sender (see /v1/conflicts)"
                           if info.get("conflict") else "")),
        ("Source", record.source), ("Origin", record.origin_address),
        ("Identity", record.identity), ("Version", record.version),
        ("Scope", record.scope or "-"), ("SAP group", record.sap_group or "-"),
        ("Site", record.site or "-"),
        ("Groups", ", ".join(record.groups) or "-"), ("Heard via", heard_via_text(info)),
        ("First seen", f"{when(record.first_seen)} ({ago(record.first_seen, now)} ago)"),
        ("Last seen", f"{when(record.last_seen)} ({ago(record.last_seen, now)} ago)"),
        ("Measured period", f"{record.period:.1f} s" if record.period else "not yet measured"),
        ("Expires", when(record.expires)),
        ("PTP clock", (clock.get("grandmaster") or clock["value"]) if clock else "-"),
        ("Signature", signature_text(record)),
    ]
    if record.local:
        fields += [("Owner uid", record.owner_uid),
                   ("ACL", json.dumps(record.acl, sort_keys=True) if record.acl else "owner only")]
    parts = [f'<section><div id="gone" class="gone" hidden></div>{_fields(fields)}</section>']
    if description is not None:
        media_clock = ", ".join(_attr(description.attributes, "mediaclk")) or "-"
        parts.append("<section><h2>Media</h2>" + media_rows(description) +
                     _fields([("Session media clock", media_clock),
                              ("ST 2022-7 legs", redundancy_text(description))]) +
                     "</section>")
    if problems:
        parts.append("<section><h2>SDP problems</h2><ul>" +
                     "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></section>")
    sid = esc(record.id)
    newline = "crlf" if "\r\n" in record.sdp else "lf"
    parts.append(
        "<section><h2>SDP</h2><div class=\"actions\">"
        '<button id="copy" type="button" hidden>Copy SDP</button>'
        f'<a id="download" href="/v1/sessions/{sid}.sdp" download>Download .sdp</a>'
        '<span id="copied" class="muted" role="status"></span></div>'
        f'<pre id="sdp" data-newline="{newline}">{esc(record.sdp)}</pre></section>')
    if record.blob:
        parts.append("<section><h2>Extension blob</h2><pre id=\"blob\">"
                     f"{esc(json.dumps(record.blob, indent=2, sort_keys=True))}</pre></section>")
    steps = "".join(f"<tr><td>{esc(when(s.time))}</td><td>{esc(s.event)}</td>"
                    f"<td class=\"num\">{s.version}</td><td>{esc(s.to_json()['reason'])}"
                    "</td></tr>" for s in history)
    parts.append("<section><h2>History</h2>"
                 '<table id="history"><thead><tr><th>When</th><th>Event</th>'
                 '<th class="num">Version</th><th>Why</th></tr></thead>'
                 f"<tbody>{steps}</tbody></table>"
                 '<p class="muted">Since this sapd started; first seen '
                 f'{esc(when(record.first_seen))}. Also as <a href="/v1/sessions/{sid}/history">'
                 "JSON</a>.</p></section>")
    body = "".join(parts).replace('<section>', f'<section data-id="{sid}">', 1)
    return page(f"sapd — {record.name}", body, scripts=["session.js"], nav=NAV)


def not_found(sid: str) -> str:
    return page("sapd — no such session",
                f"<p>No session with id <code>{esc(sid)}</code> is in the directory "
                '(it may have left: see its <a href="/v1/sessions/'
                f'{esc(urllib.parse.quote(sid, safe=""))}/history">history</a>).</p>'
                '<p><a href="/">All sessions</a></p>', nav=NAV)


def bad_request(message: str) -> str:
    return page("sapd — cannot search that",
                f"<p>{esc(message)}</p><p><a href=\"/\">All sessions</a></p>", nav=NAV)
