"""Errors both daemons' stores raise and their main() answers with exit 1 and a message."""

from __future__ import annotations


class StoreUnusable(RuntimeError):
    """The store cannot be opened as it is (a corrupt or foreign file, a schema from a
    newer version); the message names the file."""
