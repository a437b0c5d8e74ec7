"""sapctl's online commands: talk to a running sapd over its control socket."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register list/show/watch/stats/announce/withdraw on the sapctl parser."""
    del sub  # filled in with the daemon's control API


__all__ = ["add_commands", "argparse"]
