"""Durable lease storage behind a small interface (SQLite embedded; PostgreSQL later).

A lease row records what a client was granted and until when its addresses stay
taken (``hold_until``: the lease end, or the release time, plus the guard time).
The server commits a batch before it sends the ACKs for it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from sapd.plumbing.errors import StoreUnusable

ACTIVE, RELEASED, EXPIRED, REVOKED = "active", "released", "expired", "revoked"


@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: bytes
    scope: str
    addresses: tuple[str, ...]
    start: float
    end: float
    state: str
    client: str
    granted: float
    hold_until: float  # addresses are not handed to anyone else before this
    xid: int = 0

    def with_changes(self, **changes: Any) -> Lease:
        return replace(self, **changes)

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out = {"lease_id": self.lease_id.hex(), "scope": self.scope,
               "addresses": list(self.addresses), "start": self.start, "end": self.end,
               "state": self.state, "client": self.client, "granted": self.granted,
               "hold_until": self.hold_until}
        if now is not None:
            out["remaining"] = max(0.0, round(self.end - now, 3)) if self.state == ACTIVE else 0
        return out


class LeaseStore(Protocol):
    def load(self, now: float) -> list[Lease]: ...
    def commit(self, leases: Iterable[Lease]) -> None: ...
    def purge(self, before: float) -> int: ...
    def close(self) -> None: ...


class SqliteLeaseStore:
    """One SQLite file in WAL mode. ``synchronous=FULL`` (default) survives power loss;
    ``normal`` survives a killed process but may lose the last commits on power loss."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS leases (
        lease_id BLOB PRIMARY KEY,
        scope TEXT NOT NULL,
        addresses TEXT NOT NULL,
        start REAL NOT NULL,
        end_time REAL NOT NULL,
        state TEXT NOT NULL,
        client TEXT NOT NULL,
        granted REAL NOT NULL,
        hold_until REAL NOT NULL,
        xid INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS leases_hold ON leases(hold_until);
    """

    def __init__(self, path: str | Path, durability: str = "full") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            self._db.executescript(self.SCHEMA)
        except sqlite3.DatabaseError as exc:  # a corrupt or foreign file: say which one
            self._db.close()
            raise StoreUnusable(f"{path}: not a usable database ({exc}); move it away to "
                                "start with no leases (clients then re-request)") from None
        self.commits = 0

    def load(self, now: float) -> list[Lease]:
        """Every lease whose addresses are still held."""
        with self._lock:
            rows = self._db.execute(
                "SELECT lease_id, scope, addresses, start, end_time, state, client, granted, "
                "hold_until, xid FROM leases WHERE hold_until > ?", (now,)).fetchall()
        return [Lease(bytes(r[0]), r[1], tuple(r[2].split()), r[3], r[4], r[5], r[6], r[7],
                      r[8], r[9]) for r in rows]

    def commit(self, leases: Iterable[Lease]) -> None:
        rows = [(le.lease_id, le.scope, " ".join(le.addresses), le.start, le.end, le.state,
                 le.client, le.granted, le.hold_until, le.xid) for le in leases]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.commits += 1

    def purge(self, before: float) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM leases WHERE hold_until <= ?", (before,))
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
