"""sapd's control API: HTTP/1.1 + JSON on the Unix socket (aiohttp).

Every handler is thin: parse the request, call the service, shape JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web

from sapd import sdp
from sapd.announce import routes as announce_routes
from sapd.announce.request import max_body_bytes
from sapd.announce.service import Announcer
from sapd.hub import Hub
from sapd.plumbing.control import (
    Endpoint,
    control_app,
    http_error,
    json_bytes,
    json_error,
    json_response,
    peer,
)
from sapd.records import SearchQuery


class Service(Protocol):
    """What the handlers need of the daemon: the hub for reads and events, reports."""

    hub: Hub

    def health(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def metrics_text(self) -> str: ...


DAEMON_KEY: web.AppKey[Service] = web.AppKey("daemon")
COUNT_CAP = 1_000
MAX_LIMIT = 1_000  # a page of sessions, as the README documents; more is a 400, not a clamp



def _flag(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise http_error(400, f"query parameter {name}={value!r}: use true or false")


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise http_error(400, f"query parameter {name}={value!r}: "
                              f"expected an integer in {low}..{high}")
    return number


def query_from_request(request: web.Request) -> SearchQuery:
    q = request.query
    known = {"text", "media", "group", "origin", "source", "scope", "attribute", "value",
             "local", "stale", "limit", "offset"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise http_error(400, f"unknown query parameter(s): {', '.join(unknown)}",
                         known=sorted(known))
    return SearchQuery(
        text=q.get("text"), media=q.get("media"), group=q.get("group"),
        origin=q.get("origin"), source=q.get("source"), scope=q.get("scope"),
        attribute=q.get("attribute"), attribute_value=q.get("value"),
        local=_flag(q.get("local"), "local"), stale=_flag(q.get("stale"), "stale"),
        limit=_int(q.get("limit"), "limit", 100, 1, MAX_LIMIT),
        offset=_int(q.get("offset"), "offset", 0, 0, 10**9))


async def health(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    return json_response(daemon.health())


async def list_sessions(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    query = query_from_request(request)
    records = daemon.hub.reader.search(query, light=True)  # to_json shows no SDP
    if len(records) < query.limit and (records or query.offset == 0):
        total = query.offset + len(records)  # a short page: the total is known for free
    else:
        # Counting every match of a broad filter over 100k sessions costs tens of ms;
        # past COUNT_CAP the total is reported as a lower bound.
        total = daemon.hub.reader.count(query, cap=COUNT_CAP)
    return json_response({"sessions": [r.to_json() for r in records],
                         "total": min(total, COUNT_CAP), "total_exact": total <= COUNT_CAP,
                         "limit": query.limit, "offset": query.offset})


async def get_session(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON_KEY]
    sid = request.match_info["id"]
    record = daemon.hub.reader.get(sid)
    if record is None:
        return json_error(404, f"no session with id {sid!r}; see GET /v1/sessions")
    if "application/sdp" in request.headers.get("Accept", ""):
        return web.Response(text=record.sdp, content_type="application/sdp")
    body: dict[str, Any] = {"session": record.to_json(), "sdp": record.sdp}
    description, _errors, _warnings = sdp.validate(record.sdp)
    if description is not None:
        body["description"] = description.to_json()
        if request.query.get("detail") == "full":
            body["parsed"] = description.details()
    return json_response(body)


async def events(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON_KEY]
    jsonl = request.query.get("format") == "jsonl"
    response = web.StreamResponse(headers={
        "Content-Type": "application/x-ndjson" if jsonl else "text/event-stream",
        "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue = daemon.hub.subscribe()
    try:
        if not jsonl:
            await response.write(b": sapd event stream\n\n")
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=15.0)
            except TimeoutError:
                await response.write(b"\n" if jsonl else b": keep-alive\n\n")
                continue
            if item is None:  # the daemon dropped a subscriber that fell behind
                break
            data = json_bytes(item)
            if jsonl:
                await response.write(data + b"\n")
            else:
                await response.write(f"event: {item['event']}\ndata: ".encode() + data + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        daemon.hub.unsubscribe(queue)
    return response


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[DAEMON_KEY].stats())


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DAEMON_KEY].metrics_text(),
                        content_type="text/plain", charset="utf-8")


async def groups(request: web.Request) -> web.Response:
    """Every multicast group some listed session uses (madcapd avoids them)."""
    daemon = request.app[DAEMON_KEY]
    return json_response({"groups": sorted(daemon.hub.engine.groups_in_use())})


async def whoami(request: web.Request) -> web.Response:
    p = peer(request)
    return json_response({"pid": p.pid, "uid": p.uid, "gid": p.gid, "groups": p.groups})


ENDPOINTS = [
    Endpoint("GET", "/v1/health", health, "liveness and readiness"),
    Endpoint("GET", "/v1/sessions", list_sessions,
             "list sessions; filters: text media group origin source scope attribute value "
             "local stale; limit offset"),
    Endpoint("GET", "/v1/sessions/{id}", get_session,
             "one session as JSON (Accept: application/sdp for raw SDP; ?detail=full adds "
             "the sdp-transform parse)"),
    Endpoint("GET", "/v1/events", events,
             "stream of new/changed/deleted/expired (SSE; ?format=jsonl)"),
    Endpoint("GET", "/v1/stats", stats, "counters, sessions by scope, group memberships"),
    Endpoint("GET", "/v1/whoami", whoami, "the peer credentials sapd sees for you"),
    Endpoint("GET", "/v1/groups", groups, "every multicast group a listed session uses"),
    Endpoint("GET", "/metrics", metrics, "Prometheus text format"),
]


def build_app(daemon: Service, announcer: Announcer) -> web.Application:
    app = control_app(DAEMON_KEY, daemon, ENDPOINTS + announce_routes.ENDPOINTS,
                      client_max_size=max_body_bytes(
                          announcer.config.limits.max_sdp_bytes))
    app[announce_routes.ANNOUNCER_KEY] = announcer
    return app
