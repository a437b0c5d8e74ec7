"""Errors both daemons' stores raise and their main() answers with exit 1 and a message."""

from __future__ import annotations

# ``sapd --migrate check`` / ``madcapd --migrate check``: the schema is behind this
# version's (0: current; 1: the store cannot be used; --migrate itself exits 0 once done).
NEEDS_MIGRATING = 3


class StoreUnusable(RuntimeError):
    """The store cannot be opened as it is (a corrupt or foreign file, a schema from a
    newer version); the message names the file."""


class StoreUnavailable(RuntimeError):
    """The store cannot be read just now (its database server is down or unreachable);
    the next read tries again. The control API answers 503 with the message."""
