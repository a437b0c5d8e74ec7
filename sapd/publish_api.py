"""Routes for publishing local announcements (filled in by the announcer)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    del app
