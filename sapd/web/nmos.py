"""The read-only IS-04 v1.3 Node API (``/x-nmos/node/v1.3/``) on the web listener, served
from what the NMOS bridge registers. sapd has no receivers: that list is empty."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from sapd.plumbing.control import json_response

if TYPE_CHECKING:
    from sapd.bridges.nmos import NmosBridge

BASE = "/x-nmos/node/v1.3"
COLLECTIONS = {"devices": "device", "sources": "source", "flows": "flow",
               "senders": "sender"}


def add_routes(app: web.Application, bridge: NmosBridge) -> None:
    async def x_nmos(request: web.Request) -> web.Response:
        return json_response(["node/"])

    async def node_versions(request: web.Request) -> web.Response:
        return json_response(["v1.3/"])

    async def base(request: web.Request) -> web.Response:
        return json_response(["self/", "devices/", "sources/", "flows/", "senders/",
                              "receivers/"])

    async def node_self(request: web.Request) -> web.Response:
        found = bridge.resource("node", bridge.node_id)
        if found is None:
            return _not_found("the Node is not built yet (no registry found)")
        return json_response(found)

    async def collection(request: web.Request) -> web.Response:
        name = request.match_info["collection"]
        if name == "receivers":
            return json_response([])
        kind = COLLECTIONS.get(name)
        if kind is None:
            return _not_found(f"no collection {name!r}")
        return json_response(bridge.resources(kind))

    async def item(request: web.Request) -> web.Response:
        name, rid = request.match_info["collection"], request.match_info["id"]
        kind = COLLECTIONS.get(name)
        found = bridge.resource(kind, rid) if kind is not None else None
        if found is None:
            return _not_found(f"no {name[:-1]} {rid!r}")
        return json_response(found)

    for path, handler in ((["/x-nmos", "/x-nmos/"], x_nmos),
                          (["/x-nmos/node", "/x-nmos/node/"], node_versions),
                          ([BASE, BASE + "/"], base),
                          ([BASE + "/self", BASE + "/self/"], node_self),
                          ([BASE + "/{collection}", BASE + "/{collection}/"], collection),
                          ([BASE + "/{collection}/{id}", BASE + "/{collection}/{id}/"], item)):
        for route in path:
            app.router.add_get(route, handler)


def _not_found(message: str) -> web.Response:
    # the IS-04 error shape (error.json): code, error, debug
    return json_response({"code": 404, "error": message, "debug": None}, status=404)
