"""Lease store backends behind one factory. A new backend is one module here and one
entry in ``BACKENDS`` (and one parameter of tests/contract/test_lease_store.py)."""

from __future__ import annotations

from pathlib import Path

from madcap.leases import LeaseStore
from madcap.store.sqlite import SqliteLeaseStore

BACKENDS = ("sqlite",)


def open_lease_store(backend: str, state_dir: Path, durability: str = "full") -> LeaseStore:
    """The configured store (``[store] backend``); raises LeaseStoreError or ValueError."""
    if backend == "sqlite":
        return SqliteLeaseStore(state_dir / "leases.sqlite3", durability)
    raise ValueError(f"store.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
