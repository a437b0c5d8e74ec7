"""Local announcements: wiring of the sans-IO announcer into the daemon."""

from __future__ import annotations

from typing import Any


def attach(daemon: Any) -> None:
    """Attach the announcer to a daemon (filled in with the announce feature)."""
    del daemon
