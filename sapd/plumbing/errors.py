"""Errors both daemons' stores raise and their main() answers with exit 1 and a message."""

from __future__ import annotations


class StoreUnusable(RuntimeError):
    """The store cannot be opened as it is (a corrupt or foreign file, a schema from a
    newer version); the message names the file."""


class StoreUnavailable(RuntimeError):
    """The store cannot be read just now (its database server is down or unreachable);
    the next read tries again. The control API answers 503 with the message."""
