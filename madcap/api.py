"""madcapd's operator API: HTTP/JSON on the Unix control socket."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from madcap.leases import Lease
from sapd.plumbing.control import (
    Endpoint,
    control_app,
    http_error,
    json_error,
    json_response,
)

if TYPE_CHECKING:
    from madcap.daemon import MadcapDaemon

DAEMON_KEY: web.AppKey[MadcapDaemon] = web.AppKey("madcapd")



async def health(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    return json_response({"status": "ok" if daemon.ready else "starting",
                         "leases": len(daemon.server.leases),
                         "sapd": daemon.sapd_status})


async def scopes(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    return json_response({"scopes": daemon.server.scope_status(time.time())})


def _matches(lease: Lease, request: web.Request) -> bool:
    q = request.query
    return ((q.get("scope") is None or lease.scope == q["scope"])
            and (q.get("state") is None or lease.state == q["state"])
            and (q.get("address") is None or q["address"] in lease.addresses)
            and (q.get("client") is None or lease.client.startswith(q["client"]))
            and (q.get("lease_id") is None or lease.lease_id.hex().startswith(q["lease_id"])))


async def leases(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    known = {"scope", "state", "address", "client", "lease_id", "all"}
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise http_error(400, f"unknown query parameter(s): {', '.join(unknown)}",
                         known=sorted(known))
    pool = list(daemon.server.leases.values())
    if request.query.get("all", "").lower() in ("1", "true", "yes"):
        pool += list(daemon.server.held.values())
    now = time.time()
    found = sorted((le for le in pool if _matches(le, request)),
                   key=lambda le: (le.scope, le.addresses))
    return json_response({"leases": [le.to_json(now) for le in found], "now": now})


async def revoke(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    text = request.match_info["lease_id"]
    try:
        lease_id = bytes.fromhex(text)
    except ValueError:
        return json_error(400, f"{text!r} is not a hex lease identifier")
    done = daemon.server.revoke(lease_id, time.time())
    if done is None:
        return json_error(404, f"no active lease {text}; see GET /v1/leases")
    daemon.server.commit()
    return json_response({"revoked": done.to_json(time.time())})


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[DAEMON_KEY].stats())


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DAEMON_KEY].metrics_text(),
                        content_type="text/plain", charset="utf-8")


ENDPOINTS = [
    Endpoint("GET", "/v1/health", health, "liveness and readiness"),
    Endpoint("GET", "/v1/scopes", scopes,
             "scopes with addresses leased, offered, held and free"),
    Endpoint("GET", "/v1/leases", leases,
             "leases; filters: scope state address client lease_id; ?all=true adds "
             "released/expired leases still in their guard time"),
    Endpoint("DELETE", "/v1/leases/{lease_id}", revoke,
             "revoke a lease (its addresses stay held for the guard time)"),
    Endpoint("GET", "/v1/stats", stats, "counters like the MADCAP MIB, sapd link"),
    Endpoint("GET", "/metrics", metrics, "Prometheus text format"),
]


def build_app(daemon: MadcapDaemon) -> web.Application:
    return control_app(DAEMON_KEY, daemon, ENDPOINTS)
