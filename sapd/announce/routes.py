"""Routes for local announcements: publish, list, change, withdraw (with ACLs)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sapd.announce.service import Announcer, PublishError
from sapd.plumbing.control import Endpoint, http_error, json_error, json_response, peer

ANNOUNCER_KEY: web.AppKey[Announcer] = web.AppKey("announcer")
OPTION_KEYS = {"scope", "sap_group", "interval", "ttl", "interfaces", "compress"}


async def _body(request: web.Request) -> tuple[str, dict[str, Any]]:
    """Raw SDP (application/sdp or text/plain), or JSON {"sdp": ..., options...}."""
    raw = await request.read()
    if request.content_type == "application/json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise http_error(400, f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("sdp"), str):
            raise http_error(400, 'JSON body needs "sdp": the session description text')
        unknown = sorted(set(data) - OPTION_KEYS - {"sdp", "acl", "blob"})
        if unknown:
            raise http_error(400, f"unknown field(s): {', '.join(unknown)}",
                             known=sorted(OPTION_KEYS | {"sdp", "acl", "blob"}))
        options = {k: data.get(k) for k in OPTION_KEYS}
        for key in ("acl", "blob"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise http_error(400, f'"{key}" must be a JSON object')
        if data.get("interval") is not None and (not isinstance(data["interval"], int | float)
                                                 or data["interval"] <= 0):
            raise http_error(400, '"interval" must be a positive number of seconds')
        if data.get("ttl") is not None and (not isinstance(data["ttl"], int)
                                            or not 1 <= data["ttl"] <= 255):
            raise http_error(400, '"ttl" must be an integer 1..255')
        options["acl"] = data.get("acl")
        options["blob"] = data.get("blob")
        return data["sdp"], options
    try:
        return raw.decode("utf-8"), {}
    except UnicodeDecodeError:
        raise http_error(400, "the SDP is not UTF-8 text") from None


def _failure(exc: PublishError) -> web.Response:
    return json_error(exc.status, str(exc), errors=exc.errors)


async def publish(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    text, options = await _body(request)
    acl, blob = options.pop("acl", None), options.pop("blob", None)
    try:
        record = await announcer.publish(text, options, peer(request).uid, acl, blob)
    except PublishError as exc:
        return _failure(exc)
    return json_response({"id": record.id, "session": record.to_json(),
                          "announcement": announcer.describe(record.id)}, status=201,
                         headers={"Location": f"/v1/announcements/{record.id}"})


async def update(request: web.Request) -> web.Response:
    announcer = request.app[ANNOUNCER_KEY]
    text, options = await _body(request)
    try:
        record = await announcer.update(request.match_info["id"], text, options, peer(request))
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
