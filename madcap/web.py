"""madcapd's read-only web view: scopes with their usage, and the active leases.

Served by the shared listener (sapd.plumbing.web), with the same rules as sapd's: off
unless configured, GET and HEAD only, strict CSP, no cookies, everything escaped. The
page needs no script; it reloads itself every few seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from madcap import api
from madcap.leases import ACTIVE, LeaseQuery
from sapd.plumbing.control import error_middleware, json_response
from sapd.plumbing.html import esc, page
from sapd.plumbing.web import html_response, web_app

if TYPE_CHECKING:
    pass

REFRESH = 5  # seconds between the page's own reloads
WEB_LEASES = 500  # leases the page lists; a full pool (65,280) would be ~20 MB of HTML


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def usage_cells(scope: dict[str, Any]) -> list[str]:
    """leased / offered / guard / free; what is held beyond leases and offers is in its
    guard time (released or expired, not yet handed out again)."""
    guard = max(0, scope["held"] - scope["leased"] - scope["offered"])
    return [str(scope["leased"]), str(scope["offered"]), str(guard), str(scope["free"])]


def render(scopes: list[dict[str, Any]], leases: list[dict[str, Any]], now: float,
           total: int | None = None) -> str:
    """The page; ``leases`` is the first page of ``total`` active leases."""
    total = len(leases) if total is None else total
    head = "".join(f"<th>{h}</th>" for h in ("Scope", "Range", "Pool", "TTL", "Leased",
                                              "Offered", "Guard", "Free", "State"))
    rows = []
    for s in scopes:
        cells = [esc(s["name"]), esc(s["range"]), esc(s["pool"]), esc(s["ttl"]),
                 *(esc(c) for c in usage_cells(s)),
                 "usable" if s.get("usable") else "not leasing"]
        rows.append("<tr>" + "".join(
            f'<td{" class=num" if 3 <= i <= 7 else ""}>{c}</td>'
            for i, c in enumerate(cells)) + "</tr>")
    scope_table = (f'<table id="scopes"><thead><tr>{head}</tr></thead>'
                   f'<tbody>{"".join(rows)}</tbody></table>')
    lhead = "".join(f"<th>{h}</th>" for h in ("Lease", "Scope", "Addresses", "Client",
                                               "Granted", "Ends", "Remaining"))
    lrows = "".join(
        f'<tr id="lease-{esc(le["lease_id"])}"><td class="mono">{esc(le["lease_id"])}</td>'
        f'<td>{esc(le["scope"])}</td><td class="mono">{esc(", ".join(le["addresses"]))}</td>'
        f'<td class="mono">{esc(le["client"])}</td><td>{esc(_when(le["granted"]))}</td>'
        f'<td>{esc(_when(le["end"]))}</td><td class="num">{int(le.get("remaining", 0))} s</td>'
        "</tr>" for le in leases)
    empty = "" if leases else '<p id="no-leases">No active leases.</p>'
    if total > len(leases):
        empty = (f'<p id="more-leases">The first {len(leases)} of {total} are listed; all of '
                 'them: <code>madcapctl leases</code>, or '
                 f'<a href="/v1/leases?offset={len(leases)}">/v1/leases?offset='
                 f'{len(leases)}</a> and on.</p>')
    lease_table = (f'<table id="leases"><thead><tr>{lhead}</tr></thead>'
                   f"<tbody>{lrows}</tbody></table>{empty}")
    body = (f"<section><h2>Scopes</h2>{scope_table}</section>"
            f"<section><h2>Active leases ({total})</h2>{lease_table}</section>"
            f'<p class="muted">As of {esc(_when(now))}; reloads every {REFRESH} s. '
            'JSON: <a href="/v1/scopes">/v1/scopes</a>, <a href="/v1/leases">/v1/leases</a>.'
            "</p>")
    nav = '<nav><a href="/">Scopes and leases</a><a href="/v1">API</a></nav>'
    return page("madcapd — scopes and leases", body, refresh=REFRESH, nav=nav)


async def overview(request: web.Request) -> web.Response:
    service = request.app[api.SERVICE_KEY]
    page, now = service.leases(LeaseQuery(state=ACTIVE, limit=WEB_LEASES))
    leases = [le.to_json(now) for le in page.leases]  # in the listing's order already
    return html_response(render(service.scope_status(), leases, now, page.total))


def build_web_app(daemon: api.LeaseService) -> web.Application:
    app = web_app([], error_middleware)  # plumbing's stylesheet only
    app[api.SERVICE_KEY] = daemon
    endpoints = [e for e in api.ENDPOINTS if e.method == "GET"]
    listing = [{"method": e.method, "path": e.path, "description": e.description}
               for e in endpoints]

    async def index(request: web.Request) -> web.Response:
        return json_response({"endpoints": listing, "read_only": True})
    app.router.add_get("/", overview)
    app.router.add_get("/v1", index)
    for endpoint in endpoints:
        app.router.add_get(endpoint.path, endpoint.handler)
    return app
