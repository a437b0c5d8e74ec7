"""sapd's web app: the socket API's GET routes and the pages, read-only, over TCP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sapd import api, sdp
from sapd.announce import routes as announce_routes
from sapd.announce.service import Announcer
from sapd.plumbing.control import error_middleware, json_response
from sapd.plumbing.web import esc, html_response, web_app
from sapd.web import nmos, pages

if TYPE_CHECKING:
    from sapd.bridges.nmos import NmosBridge

PAGE_PARAMS = (*pages.FILTERS, "limit", "offset")


def _now(request: web.Request) -> float:
    return float(request.app[api.DAEMON_KEY].hub.clock.now())


async def directory(request: web.Request) -> web.Response:
    """The directory page; its filters are GET /v1/sessions' own (empty ones ignored)."""
    daemon = request.app[api.DAEMON_KEY]
    params = {k: v for k, v in request.query.items() if v != "" and k in PAGE_PARAMS}
    unknown = sorted(set(request.query) - set(PAGE_PARAMS))
    clone = request.clone(rel_url=request.rel_url.with_query(params))
    try:
        query = api.query_from_request(clone)  # the same checks as the API
    except web.HTTPBadRequest as exc:
        message = json.loads(exc.text or "{}").get("error", {}).get("message", exc.reason)
        return html_response(pages.bad_request(message), status=400)
    result = api.search_page(daemon, query)
    # the configured scopes, not those in use: counting them walks every session
    scopes = sorted({s.name for s in daemon.hub.engine.scopes.scopes} | {""})
    text = pages.directory(result, params, scopes, _now(request))
    if unknown:  # a page is forgiving where the API is strict: say so, go on
        text = text.replace("<main>", "<main><p class=\"muted\">Ignored: "
                            + ", ".join(esc(u) for u in unknown) + "</p>", 1)
    return html_response(text)


async def session_page(request: web.Request) -> web.Response:
    daemon = request.app[api.DAEMON_KEY]
    sid = request.match_info["id"]
    record = daemon.hub.reader.get(sid)
    if record is None:
        return html_response(pages.not_found(sid), status=404)
    info = api.session_json(record, daemon.conflicted())
    description, errors, warnings = sdp.validate(record.sdp)
    problems = [str(e) for e in errors] + [f"warning: {w}" for w in warnings]
    return html_response(pages.session(record, info, description, problems,
                                       daemon.history.of(sid), _now(request)))


def build_web_app(daemon: api.Service, announcer: Announcer,
                  nmos_bridge: NmosBridge | None = None) -> web.Application:
    """Pages at / and /sessions/{id}; every GET route of the control API under /v1;
    assets from sapd/web/assets and sapd/plumbing/assets; with NMOS registration on, the
    IS-04 Node API under /x-nmos/node/v1.3."""
    app = web_app(["sapd.web"], error_middleware)
    app[api.DAEMON_KEY] = daemon
    app[announce_routes.ANNOUNCER_KEY] = announcer
    endpoints = [e for e in api.ENDPOINTS + announce_routes.ENDPOINTS if e.method == "GET"]
    listing: list[dict[str, Any]] = [
        {"method": e.method, "path": e.path, "description": e.description} for e in endpoints]

    async def index(request: web.Request) -> web.Response:
        return json_response({"endpoints": listing, "read_only": True})
    app.router.add_get("/", directory)
    app.router.add_get("/sessions/{id}", session_page)
    app.router.add_get("/v1", index)
    for endpoint in endpoints:
        app.router.add_get(endpoint.path, endpoint.handler)
    if nmos_bridge is not None:
        nmos.add_routes(app, nmos_bridge)
    return app
