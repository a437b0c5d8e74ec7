"""madcapd's operator API: HTTP/JSON on the Unix control socket.

The handlers speak to a ``LeaseService`` (madcapd implements it): they never reach
into the allocator or the store, and this module imports nothing of the daemon.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from madcap.leases import PAGE_LIMIT, Lease, LeasePage, LeaseQuery, LeaseStoreError
from sapd.plumbing.control import (
    Endpoint,
    control_app,
    http_error,
    json_error,
    json_response,
    query_int,
    refuse_nul,
)


class LeaseService(Protocol):
    def health(self) -> dict[str, Any]: ...
    def scope_status(self) -> list[dict[str, Any]]: ...
    def leases(self, query: LeaseQuery) -> tuple[LeasePage, float]:
        """A page of the matching leases and the time it was taken at."""
        ...

    def revoke(self, lease_id: bytes) -> Lease | None:
        """End a lease now, durably (raises LeaseStoreError); None if not active."""
        ...

    def stats(self) -> dict[str, Any]: ...
    def metrics_text(self) -> str: ...


SERVICE_KEY: web.AppKey[LeaseService] = web.AppKey("madcapd")


async def health(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICE_KEY].health())


async def scopes(request: web.Request) -> web.Response:
    return json_response({"scopes": request.app[SERVICE_KEY].scope_status()})


_FILTERS = ("scope", "state", "address", "client", "lease_id")


async def leases(request: web.Request) -> web.Response:
    known = {*_FILTERS, "all", "limit", "offset"}
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise http_error(400, f"unknown query parameter(s): {', '.join(unknown)}",
                         known=sorted(known))
    q = request.query
    refuse_nul(q)
    query = LeaseQuery(**{k: q.get(k) for k in _FILTERS},
                       include_held=q.get("all", "").lower() in ("1", "true", "yes"),
                       limit=query_int(q.get("limit"), "limit", PAGE_LIMIT, 1, PAGE_LIMIT),
                       offset=query_int(q.get("offset"), "offset", 0, 0, 10**9))
    try:
        page, now = request.app[SERVICE_KEY].leases(query)
    except LeaseStoreError as exc:  # a shared database that is down
        return json_error(503, f"lease store: {exc}")
    return json_response(page.to_json(now))


async def revoke(request: web.Request) -> web.Response:
    text = request.match_info["lease_id"]
    try:
        lease_id = bytes.fromhex(text)
    except ValueError:
        return json_error(400, f"{text!r} is not a hex lease identifier")
    try:
        done = request.app[SERVICE_KEY].revoke(lease_id)
    except LeaseStoreError as exc:
        return json_error(503, f"lease store: {exc}; the lease is unchanged")
    if done is None:
        return json_error(404, f"no active lease {text}; see GET /v1/leases")
    return json_response({"revoked": done.to_json(done.end)})


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICE_KEY].stats())


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SERVICE_KEY].metrics_text(),
                        content_type="text/plain", charset="utf-8")


ENDPOINTS = [
    Endpoint("GET", "/v1/health", health, "liveness and readiness"),
    Endpoint("GET", "/v1/scopes", scopes,
             "scopes with addresses leased, offered, held and free"),
    Endpoint("GET", "/v1/leases", leases,
             "leases; filters: scope state address client lease_id; ?all=true adds "
             f"released/expired leases still in their guard time; limit (<= {PAGE_LIMIT}) "
             "offset, with the total"),
    Endpoint("DELETE", "/v1/leases/{lease_id}", revoke,
             "revoke a lease (its addresses stay held for the guard time)"),
    Endpoint("GET", "/v1/stats", stats, "counters like the MADCAP MIB, sapd link"),
    Endpoint("GET", "/metrics", metrics, "Prometheus text format"),
]


def build_app(service: LeaseService) -> web.Application:
    return control_app(SERVICE_KEY, service, ENDPOINTS)
