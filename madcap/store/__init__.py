"""Lease store backends behind one factory. A new backend is one module here and one
entry in ``BACKENDS`` (and one parameter of tests/contract/test_lease_store.py)."""

from __future__ import annotations

from pathlib import Path

from madcap.leases import LeaseStore
from madcap.store.sqlite import SqliteLeaseStore

BACKENDS = ("sqlite", "postgresql")


def open_lease_store(backend: str, state_dir: Path, durability: str = "full",
                     dsn: str | None = None, password_file: str | None = None) -> LeaseStore:
    """The configured store (``[store] backend``); raises LeaseStoreError or ValueError.
    PostgreSQL's password comes from ``password_file``, else PGPASSWORD or pgpass (libpq)."""
    if backend == "sqlite":
        return SqliteLeaseStore(state_dir / "leases.sqlite3", durability)
    if backend == "postgresql":
        # imported here: an SQLite-only madcapd never loads libpq
        from madcap.store.postgresql import PostgresLeaseStore, read_password  # noqa: PLC0415

        if dsn is None:
            raise ValueError("store.dsn: required with backend = \"postgresql\"")
        return PostgresLeaseStore(dsn, read_password(password_file))
    raise ValueError(f"store.backend: {backend!r} is not one of {', '.join(BACKENDS)}")
