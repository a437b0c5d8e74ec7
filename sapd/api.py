"""sapd's control API: HTTP/1.1 + JSON on the Unix socket (aiohttp).

Every handler is thin: parse the request, call the service, shape JSON.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import urllib.parse
from typing import Any, Protocol

from aiohttp import web

from sapd import sdp, streaminfo
from sapd.announce import routes as announce_routes
from sapd.announce.request import max_body_bytes
from sapd.announce.service import Announcer
from sapd.conflicts import Conflict
from sapd.eventlog import RESYNC, Entry
from sapd.history import SessionHistory
from sapd.hub import Hub
from sapd.plumbing import groupranges
from sapd.plumbing.control import (
    Endpoint,
    control_app,
    http_error,
    json_bytes,
    json_error,
    json_response,
    peer,
    query_int,
    refuse_nul,
)
from sapd.records import SearchQuery, SessionRecord


class Service(Protocol):
    """What the handlers need of the daemon: the hub for reads and events, reports."""

    hub: Hub
    history: SessionHistory

    def health(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def metrics_text(self) -> str: ...
    def conflicts(self) -> list[Conflict]: ...
    def conflicted(self) -> set[str]: ...
    def web_urls(self) -> tuple[str | None, str | None]: ...
    def sites(self) -> list[dict[str, Any]]: ...


DAEMON_KEY: web.AppKey[Service] = web.AppKey("daemon")
COUNT_CAP = 1_000
GROUPS_LISTED = 4_096  # addresses /v1/groups spells out one by one; ranges are exact
KEEP_ALIVE = 15.0  # seconds between keep-alives on an idle event stream
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


def _group(value: str | None) -> str | None:
    """A group as stored (canonical text), however it is typed: FF0E::ABCD, ff0e:0::abcd,
    or a range as sessions show it (FIRST-LAST)."""
    if value is None:
        return None
    try:
        if groupranges.SEPARATOR in value:
            return groupranges.parse(value).text
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise http_error(400, f"query parameter group={value[:64]!r}: not an IP address "
                              "or FIRST-LAST range") from None


def _site(value: str | None) -> str | None:
    if value is not None and not 1 <= len(value) <= 256:
        raise http_error(400, "query parameter site=: expected a site name of 1 to 256 "
                              "characters")
    return value


def query_from_request(request: web.Request) -> SearchQuery:
    q = request.query
    known = {"text", "media", "group", "origin", "source", "scope", "attribute", "value",
             "local", "stale", "clock", "redundant", "site", "limit", "offset"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise http_error(400, f"unknown query parameter(s): {', '.join(unknown)}",
                         known=sorted(known))
    refuse_nul(q)
    if q.get("value") is not None and q.get("attribute") is None:
        raise http_error(400, "query parameter value= needs attribute= (the attribute whose "
                              "value it matches)")
    return SearchQuery(
        text=q.get("text"), media=q.get("media"), group=_group(q.get("group")),
        origin=q.get("origin"), source=q.get("source"), scope=q.get("scope"),
        attribute=q.get("attribute"), attribute_value=q.get("value"),
        local=_flag(q.get("local"), "local"), stale=_flag(q.get("stale"), "stale"),
        clock=q.get("clock") or None, redundant=_flag(q.get("redundant"), "redundant"),
        site=_site(q.get("site")),
        limit=query_int(q.get("limit"), "limit", 100, 1, MAX_LIMIT),
        offset=query_int(q.get("offset"), "offset", 0, 0, 10**9))


async def health(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    return json_response(daemon.health())


def session_json(record: SessionRecord, conflicted: set[str]) -> dict[str, Any]:
    """The API's session: the record, what its attributes say (codecs, clock,
    redundancy: stored with them, or read from them), and whether it conflicts with
    another sender's session."""
    listing = record.listing
    if listing is None:
        listing = streaminfo.summary(record.attributes)
    return {**record.to_json(), **listing, "conflict": record.id in conflicted}


def search_page(daemon: Service, query: SearchQuery) -> dict[str, Any]:
    """One page of a search, as GET /v1/sessions answers it (the web page too)."""
    # light: without the SDP and attribute rows; the stored listing says what they show
    records = daemon.hub.reader.search(query, light=True)
    if len(records) < query.limit and (records or query.offset == 0):
        total = query.offset + len(records)  # a short page: the total is known for free
    else:
        # Counting every match of a broad filter over 100k sessions costs tens of ms;
        # past COUNT_CAP the total is reported as a lower bound.
        total = daemon.hub.reader.count(query, cap=COUNT_CAP)
    conflicted = daemon.conflicted()
    return {"sessions": [session_json(r, conflicted) for r in records],
            "total": min(total, COUNT_CAP), "total_exact": total <= COUNT_CAP,
            "limit": query.limit, "offset": query.offset}


async def list_sessions(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    return json_response(search_page(daemon, query_from_request(request)))


def _session(request: web.Request) -> SessionRecord:
    sid = request.match_info["id"]
    record = request.app[DAEMON_KEY].hub.reader.get(sid)
    if record is None:
        raise http_error(404, f"no session with id {sid!r}; see GET /v1/sessions")
    return record


def sdp_filename(record: SessionRecord, ascii_only: bool = True) -> str:
    """A file name from the session name: runs of anything but letters, digits and
    ``.-_`` become one ``_``; the id when nothing is left."""
    flags = re.ASCII if ascii_only else 0
    stem = re.sub(r"[^\w.-]+", "_", record.name, flags=flags).strip("._")[:80]
    return f"{stem or record.id}.sdp"


def sdp_response(record: SessionRecord) -> web.Response:
    disposition = f'attachment; filename="{sdp_filename(record)}"'
    unicode_name = sdp_filename(record, ascii_only=False)
    if unicode_name != sdp_filename(record):  # RFC 6266: browsers prefer filename*
        disposition += f"; filename*=UTF-8''{urllib.parse.quote(unicode_name, safe='')}"
    return web.Response(text=record.sdp, content_type="application/sdp",
                        headers={"Content-Disposition": disposition})


async def get_session(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON_KEY]
    record = _session(request)
    if "application/sdp" in request.headers.get("Accept", ""):
        return sdp_response(record)
    body: dict[str, Any] = {"session": session_json(record, daemon.conflicted()),
                            "sdp": record.sdp}
    description, _errors, _warnings = sdp.validate(record.sdp)
    if description is not None:
        body["description"] = description.to_json()
        if request.query.get("detail") == "full":
            body["parsed"] = description.details()
    return json_response(body)


async def get_session_sdp(request: web.Request) -> web.Response:
    return sdp_response(_session(request))


async def session_history(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    sid = request.match_info["id"]
    record = daemon.hub.reader.get(sid)
    steps = [step.to_json() for step in daemon.history.of(sid)]
    if record is None and not steps:
        return json_error(404, f"no session with id {sid!r} and no history of one")
    return json_response({"id": sid, "history": steps,
                          "first_seen": record.first_seen if record else None,
                          "present": record is not None})


async def conflicts(request: web.Request) -> web.Response:
    found = request.app[DAEMON_KEY].conflicts()
    return json_response({"conflicts": [c.to_json() for c in found]})


def playlist_entry(record: SessionRecord, base: str | None) -> str:
    """An M3U entry: the SDP's URL where there is a web listener (VLC and ffplay read
    it), else the first media's rtp:// address."""
    title = " ".join(record.name.split())  # one line, whatever the name holds
    if base is not None:
        target = f"{base.rstrip('/')}/v1/sessions/{record.id}.sdp"
    else:
        description, _errors, _warnings = sdp.validate(record.sdp)
        media = description.media[0] if description and description.media else None
        group = record.groups[0].partition(groupranges.SEPARATOR)[0] if record.groups \
            else record.origin_address
        host = f"[{group}]" if ":" in group else group
        target = f"rtp://@{host}:{media.port if media else 5004}"
    return f"#EXTINF:-1,{title}\n{target}\n"


async def playlist(request: web.Request) -> web.Response:
    """The current filter's sessions (same parameters as GET /v1/sessions) as M3U."""
    daemon = request.app[DAEMON_KEY]
    query = query_from_request(request)
    public, listener = daemon.web_urls()
    if public is not None:
        base: str | None = public
    elif peer(request).pid == -1:  # asked over TCP: the origin it was asked at
        forwarded = request.headers.get("X-Forwarded-Proto", "")  # behind a TLS proxy
        scheme = forwarded if forwarded in ("http", "https") else request.scheme
        base = f"{scheme}://{request.host}"
    else:  # on the Unix socket: the listener, if there is one
        base = listener
    records = daemon.hub.reader.search(query)
    text = "#EXTM3U\n" + "".join(playlist_entry(r, base) for r in records)
    return web.Response(text=text, content_type="audio/x-mpegurl", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="sapd.m3u"'})


def _sse(entry: Entry | str) -> bytes:
    if isinstance(entry, Entry):
        return f"id: {entry.event_id}\nevent: {entry.kind}\ndata: ".encode() + \
            entry.data + b"\n\n"
    return b'event: resync\ndata: {"event":"resync"}\n\n'


def _jsonl(entry: Entry | str) -> bytes:
    if isinstance(entry, Entry):
        return entry.data + b"\n"
    return json_bytes({"event": RESYNC}) + b"\n"


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events with ids; Last-Event-ID (header, or ?last_event_id= where a
    client cannot set headers) resumes within the history, else starts with resync."""
    daemon = request.app[DAEMON_KEY]
    jsonl = request.query.get("format") == "jsonl"
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    response = web.StreamResponse(headers={
        "Content-Type": "application/x-ndjson" if jsonl else "text/event-stream",
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # subscribed before the headers go: a client that saw them misses nothing after
    subscription = daemon.hub.subscribe(last)
    encode = _jsonl if jsonl else _sse
    try:
        await response.prepare(request)
        if not jsonl:
            await response.write(b": sapd event stream\nretry: 1000\n\n")
        while True:
            try:
                entry = await subscription.next(timeout=KEEP_ALIVE)
            except TimeoutError:
                await response.write(b"\n" if jsonl else b": keep-alive\n\n")
                continue
            if entry is None:  # the daemon is stopping
                break
            await response.write(encode(entry))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        daemon.hub.unsubscribe(subscription)
    return response


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[DAEMON_KEY].stats())


async def sites(request: web.Request) -> web.Response:
    return json_response({"sites": request.app[DAEMON_KEY].sites()})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DAEMON_KEY].metrics_text(),
                        content_type="text/plain", charset="utf-8")


async def groups(request: web.Request) -> web.Response:
    """Every multicast group some listed session uses (madcapd avoids them): ``ranges``,
    exact and merged; ``groups``, the same one address at a time while they number at
    most GROUPS_LISTED (else ``groups_complete`` is false and only ranges tell all)."""
    daemon = request.app[DAEMON_KEY]
    ranges = daemon.hub.engine.group_ranges()
    listed, complete = groupranges.addresses(ranges, GROUPS_LISTED)
    return json_response({"groups": listed, "groups_complete": complete,
                          "ranges": [r.to_json() for r in ranges]})


async def whoami(request: web.Request) -> web.Response:
    p = peer(request)
    return json_response({"pid": p.pid, "uid": p.uid, "gid": p.gid, "groups": p.groups})


ENDPOINTS = [
    Endpoint("GET", "/v1/health", health, "liveness and readiness"),
    Endpoint("GET", "/v1/sessions", list_sessions,
             "list sessions; filters: text media group origin source scope attribute value "
             "local stale clock redundant; limit offset"),
    Endpoint("GET", "/v1/playlist.m3u", playlist,
             "the sessions of a filter (same parameters) as an M3U playlist"),
    # before /v1/sessions/{id}, which would match the .sdp name too
    Endpoint("GET", "/v1/sessions/{id}.sdp", get_session_sdp,
             "one session's SDP as a file (application/sdp)"),
    Endpoint("GET", "/v1/sessions/{id}", get_session,
             "one session as JSON (Accept: application/sdp for raw SDP; ?detail=full adds "
             "the sdp-transform parse)"),
    Endpoint("GET", "/v1/sessions/{id}/history", session_history,
             "when a session appeared, changed and why it left (recent, bounded)"),
    Endpoint("GET", "/v1/conflicts", conflicts,
             "live sessions of different senders on the same group and port"),
    Endpoint("GET", "/v1/events", events,
             "stream of new/changed/deleted/expired with ids; Last-Event-ID resumes, "
             "resync when too far behind (SSE; ?format=jsonl)"),
    Endpoint("GET", "/v1/stats", stats, "counters, sessions by scope, group memberships"),
    Endpoint("GET", "/v1/sites", sites,
             "the sapd sites writing this directory: sessions, heartbeat age, silent"),
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
