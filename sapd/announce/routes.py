"""Routes for local announcements: publish, list, change, withdraw (with ACLs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sapd.announce.request import RequestError, check_sdp_size, parse_body
from sapd.announce.service import Announcer, PublishError
from sapd.plumbing.control import Endpoint, http_error, json_error, json_response, peer

ANNOUNCER_KEY: web.AppKey[Announcer] = web.AppKey("announcer")


@dataclass(frozen=True)
class Body:
    sdp: str
    options: dict[str, Any]  # only the options given
    acl: dict[str, Any] | None  # None: not given
    blob: dict[str, Any] | None


async def _body(request: web.Request, announcer: Announcer) -> Body:
    """Raw SDP (application/sdp or text/plain), or JSON {"sdp": ..., options...}; every
    field typed and bounded (sapd.announce.request), errors naming the field."""
    raw = await request.read()
    max_sdp = announcer.config.limits.max_sdp_bytes
    try:
        if request.content_type == "application/json":
            parsed = parse_body(raw, max_sdp)
            return Body(parsed.sdp, parsed.options.given(), parsed.options.acl_dict(),
                        parsed.blob)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("sdp", "the SDP is not UTF-8 text") from None
        check_sdp_size(text, max_sdp)
        return Body(text, {}, None, None)
    except RequestError as exc:
        raise http_error(400, str(exc), field=exc.field) from None


def _failure(exc: PublishError) -> web.Response:
    extra: dict[str, Any] = {"field": exc.field} if exc.field else {}
    return json_error(exc.status, str(exc), errors=exc.errors, **extra)


async def publish(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    body = await _body(request, announcer)
    try:
        record = await announcer.publish(body.sdp, body.options, peer(request).uid,
                                         body.acl, body.blob)
    except PublishError as exc:
        return _failure(exc)
    return json_response({"id": record.id, "session": record.to_json(),
                          "announcement": announcer.describe(record.id)}, status=201,
                         headers={"Location": f"/v1/announcements/{record.id}"})


async def update(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    body = await _body(request, announcer)
    try:
        record = await announcer.update(request.match_info["id"], body.sdp, body.options,
                                        peer(request), body.acl, body.blob)
    except PublishError as exc:
        return _failure(exc)
    return json_response({"id": record.id, "session": record.to_json(),
                         "announcement": announcer.describe(record.id)})


async def withdraw(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    try:
        record = await announcer.withdraw(request.match_info["id"], peer(request))
    except PublishError as exc:
        return _failure(exc)
    return json_response({"withdrawn": record.id, "name": record.name})


async def list_announcements(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    return json_response({"announcements": [announcer.describe(sid)
                                                 for sid in sorted(announcer.locals)]})


async def get_announcement(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    sid = request.match_info["id"]
    if sid not in announcer.locals:
        return json_error(404, f"no local announcement {sid}; see GET /v1/announcements")
    return json_response(announcer.describe(sid))


ENDPOINTS = [
    Endpoint("POST", "/v1/announcements", publish,
             "publish an SDP (raw body or JSON {sdp, ...})"),
    Endpoint("GET", "/v1/announcements", list_announcements,
             "local announcements with targets, intervals and packets sent"),
    Endpoint("GET", "/v1/announcements/{id}", get_announcement, "one local announcement"),
    Endpoint("PUT", "/v1/announcements/{id}", update, "replace a local announcement's SDP"),
    Endpoint("DELETE", "/v1/announcements/{id}", withdraw, "withdraw a local announcement"),
]
