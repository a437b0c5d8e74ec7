"""HTML for both daemons' pages: escaping and the document around a page. Pure."""

from __future__ import annotations

import html
from collections.abc import Iterable


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute; None shows as a dash."""
    return "-" if value is None else html.escape(str(value), quote=True)


def page(title: str, body: str, *, scripts: Iterable[str] = (), refresh: int | None = None,
         nav: str = "") -> str:
    """A whole HTML document around ``body`` (already escaped HTML). ``scripts`` are
    asset names served under /assets/ (same origin, as the CSP demands)."""
    tags = "".join(f'<script src="/assets/{esc(name)}" defer></script>' for name in scripts)
    meta = f'<meta http-equiv="refresh" content="{refresh:d}">' if refresh else ""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"{meta}<title>{esc(title)}</title>"
            "<link rel=\"icon\" href=\"data:,\">"  # no favicon request to 404
            "<link rel=\"stylesheet\" href=\"/assets/base.css\">"
            f"{tags}</head><body><header><h1>{esc(title)}</h1>{nav}</header>"
            f"<main>{body}</main></body></html>")
