"""The read-only TCP listener for browsers, shared by sapd and madcapd.

Off unless ``[web] listen`` or ``--web HOST:PORT`` is given. Over TCP nobody's
credentials are known, so only GET and HEAD are served: whatever changes state stays on
the Unix socket, where peer credentials decide. Every response carries a strict
Content-Security-Policy (scripts only from files of this origin, nothing inline), and
no cookie is ever set. Pages are built from :func:`page`, which escapes what it is
given through :func:`esc`; assets ship inside the package.
"""

from __future__ import annotations

import ipaddress
from importlib import resources
from typing import Any

from aiohttp import web

from sapd.plumbing import logs
from sapd.plumbing.config import WebConfig
from sapd.plumbing.html import esc, page

__all__ = ["WebConfig", "WebListener", "esc", "html_response", "page", "web_app"]

log = logs.get("web")

READ_ONLY_METHODS = frozenset({"GET", "HEAD"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png",
               ".svg": "image/svg+xml"}


def parse_host_port(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT; the host is an address (a name would resolve at start,
    and a listener's scope should be plain to read)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8375")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is not within 1..65535")
    return host, port


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def guard_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Read-only: GET and HEAD reach the handlers, nothing else does."""
    if request.method not in READ_ONLY_METHODS:
        return web.json_response(
            {"error": {"status": 405, "message": f"{request.method} is not served over "
                       "TCP: this listener is read-only; use the Unix control socket"}},
            status=405, headers={"Allow": "GET, HEAD"})
    response: web.StreamResponse = await handler(request)
    return response


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer as its headers go out: pages, errors and streams alike."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def asset_handler(packages: list[str]) -> Any:
    """GET /assets/{name}: a file shipped in one of ``packages``' ``assets`` folders
    (first match wins). Names are plain file names, never paths."""
    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = name[name.rfind("."):] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in ASSET_TYPES:
            raise web.HTTPNotFound(text=f"no asset {name!r}")
        for package in packages:
            item = resources.files(package).joinpath("assets", name)
            if item.is_file():
                return web.Response(body=item.read_bytes(), content_type=ASSET_TYPES[suffix],
                                    headers={"Cache-Control": "no-cache"})
        raise web.HTTPNotFound(text=f"no asset {name!r}")
    return serve


def web_app(packages: list[str], *middlewares: Any) -> web.Application:
    """An app with the guard (then ``middlewares``), and /assets/ from ``packages``
    (plumbing's own last)."""
    app = web.Application(middlewares=[guard_middleware, *middlewares])
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/assets/{name}", asset_handler([*packages, "sapd.plumbing"]))
    return app


class WebListener:
    """Runs a web app on HOST:PORT over TCP."""

    def __init__(self, app: web.Application, listen: str) -> None:
        self.app = app
        self.host, self.port = parse_host_port(listen)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if not is_loopback(self.host):
            log.warning("web listener on a non-loopback address: anyone who can reach it "
                        "can read the directory; put a reverse proxy with TLS and "
                        "authentication in front (see README)", listen=self.url)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=1.0,
                           reuse_address=True)
        await site.start()
        log.info("web listener", url=self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
