"""The embedded lease store: one SQLite file in WAL mode.

``synchronous=FULL`` (default) survives power loss; ``normal`` survives a killed
process but may lose the last commits on power loss. One madcapd owns the file (it
holds ``STATE_DIR/lock``), so which addresses are held is known here, in memory, and a
commit that would give an address to a second lease is refused for that lease alone,
as a shared database's constraint refuses it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from madcap.leases import (
    COMMITTED,
    CommitResult,
    Lease,
    LeasePage,
    LeaseQuery,
    LeaseStoreError,
    MemoryReplyCache,
    ReplyCache,
)
from sapd.plumbing.clock import SteadyClock

_COLUMNS = ("lease_id, scope, addresses, start, end_time, state, client, granted, "
            "hold_until, xid")

# The schema, one step per version, applied in order and recorded in schema_version.
# Files written before versioning have the version 1 tables and no schema_version.
MIGRATIONS: tuple[str, ...] = (
    """
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
    """,
    # 2, 3, ...: appended here, never edited once released (an index costs every write:
    # the client and address look-ups are operator questions, answered by a scan)
)
SCHEMA_VERSION = len(MIGRATIONS)
_MINUTE = 60.0  # the purge's buckets of hold ends


def _reason(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_FULL"):
        return "disk_full"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return "corrupt"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "locked"
    return "io"


def _lease(r: tuple[Any, ...]) -> Lease:
    return Lease(bytes(r[0]), r[1], tuple(r[2].split()), r[3], r[4], r[5], r[6], r[7], r[8],
                 r[9])


class SqliteLeaseStore:
    backend = "sqlite"
    shared = False  # one madcapd owns the file: its memory is the whole truth
    # madcapd may run commit() and purge() in a thread of their own beside the loop:
    # the connection is used under _lock, and the holders are touched only by them
    threaded_commit = True

    def __init__(self, path: str | Path, durability: str = "full",
                 clock: SteadyClock | None = None) -> None:
        self.path = str(path)
        # Leases are durations (RFC 2730 s. 2.1): decided on elapsed time, so that a step
        # of the system clock neither ends them early nor frees their addresses.
        self.clock = clock or SteadyClock()
        if self.path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.commits = 0
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._cache = MemoryReplyCache()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            self._migrate()
        except sqlite3.Error as exc:
            raise LeaseStoreError(_reason(exc), f"{self.path}: {exc}") from None
        self.problem = self.check()
        # address -> the lease holding it, for the refusal check (rebuilt from the file on
        # open); the rare second and later live holders (future starts) in _more
        self._holders: dict[str, Lease] = {}
        self._more: dict[str, list[Lease]] = {}
        # the addresses held, by the minute their hold ends (an address held again
        # since is skipped there), so that a purge looks at what is due, not at every
        # address held (~20-100 ms in the commit thread, once a minute)
        self._due: dict[int, list[str]] = {}
        now = self.now()
        for lease in self.load(now):
            self._hold(lease, now)

    def _migrate(self) -> None:
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > SCHEMA_VERSION:
            raise LeaseStoreError("schema", f"{self.path}: lease schema version {version} "
                                  f"is newer than this madcapd's {SCHEMA_VERSION}")
        for number in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?)", (number,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0])

    # -- the interface ------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def reply_cache(self) -> ReplyCache:
        return self._cache

    def check(self) -> str | None:
        """PRAGMA quick_check: corrupt pages (tables or indexes) named, or None."""
        try:
            with self._lock:
                rows = self._db.execute("PRAGMA quick_check(5)").fetchall()
        except sqlite3.Error as exc:
            return f"corrupt: {self.path}: {exc}"
        found = [str(r[0]) for r in rows]
        if found == ["ok"]:
            return None
        return f"corrupt: {self.path}: " + "; ".join(found)

    def load(self, now: float) -> list[Lease]:
        # NOT INDEXED: the rows themselves, so that a damaged index (reported by check())
        # cannot hide a lease that is held
        return self._select("NOT INDEXED WHERE hold_until > ?", (now,))

    def get(self, lease_id: bytes) -> Lease | None:
        found = self._select("WHERE lease_id = ?", (lease_id,))
        return found[0] if found else None

    def by_address(self, address: str) -> list[Lease]:
        # An operator's question, not the hot path: a scan of the addresses column.
        return [le for le in self._select("WHERE ' ' || addresses || ' ' LIKE ?",
                                          (f"% {address} %",)) if address in le.addresses]

    def by_client(self, client: str) -> list[Lease]:
        return self._select("WHERE client = ?", (client,))

    def _select(self, where: str, args: tuple[object, ...]) -> list[Lease]:
        try:
            with self._lock:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM leases {where}",
                                        args).fetchall()
        except sqlite3.Error as exc:
            raise LeaseStoreError(_reason(exc), f"{self.path}: {exc}") from None
        return [_lease(r) for r in rows]

    def commit(self, leases: Sequence[Lease]) -> CommitResult:
        if not leases:
            return COMMITTED
        refused: set[bytes] = set()
        taken: list[Lease] = []
        for lease in leases:
            others = self._overlapping(lease)
            if others:
                refused.add(lease.lease_id)
                taken += others
        rows = [(le.lease_id, le.scope, " ".join(le.addresses), le.start, le.end, le.state,
                 le.client, le.granted, le.hold_until, le.xid)
                for le in leases if le.lease_id not in refused]
        if rows:
            try:
                self._write(rows)
            except sqlite3.Error as exc:
                reason = _reason(exc)
                # a failed write may be the first sign of damage; a full disk or a lock
                # is not (and quick_check reads the whole file: not once per batch)
                found = self.check() if reason in ("corrupt", "io") else None
                if reason == "corrupt" or found is not None:
                    self.problem = found or f"corrupt: {self.path}: {exc}"
                    reason = "corrupt"
                raise LeaseStoreError(reason, f"{self.path}: {exc}") from None
        now = self.now()
        for lease in leases:
            if lease.lease_id not in refused:
                self._hold(lease, now)
        if refused:
            return CommitResult(frozenset(refused), tuple(taken))
        return COMMITTED

    def _write(self, rows: Sequence[tuple[object, ...]]) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(f"INSERT OR REPLACE INTO leases ({_COLUMNS}) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self.commits += 1

    def _overlapping(self, lease: Lease) -> list[Lease]:
        found: list[Lease] = []
        holders, more = self._holders, self._more
        for address in lease.addresses:
            other = holders.get(address)
            if other is not None and other.lease_id != lease.lease_id \
                    and other.start < lease.hold_until and lease.start < other.hold_until:
                found.append(other)
            if more:
                found += [o for o in more.get(address, ()) if o.lease_id != lease.lease_id
                          and o.start < lease.hold_until and lease.start < o.hold_until]
        return found

    def _hold(self, lease: Lease, now: float) -> None:
        holders, more = self._holders, self._more
        due = self._due.get(int(lease.hold_until // _MINUTE))
        if due is None:
            due = self._due[int(lease.hold_until // _MINUTE)] = []
        due += lease.addresses
        for address in lease.addresses:
            other = holders.get(address)
            holders[address] = lease
            if other is None or other.lease_id == lease.lease_id or other.hold_until <= now:
                if more and address in more:
                    self._unstack(address, lease, now)
                continue
            # another live holder: a lease that starts later, or one this one follows
            more.setdefault(address, []).append(other)
            self._unstack(address, lease, now)

    def _unstack(self, address: str, lease: Lease, now: float) -> None:
        kept = [o for o in self._more[address]
                if o.lease_id != lease.lease_id and o.hold_until > now]
        if kept:
            self._more[address] = kept
        else:
            del self._more[address]

    def purge(self, before: float) -> int:
        try:
            with self._lock:
                cur = self._db.execute("DELETE FROM leases WHERE hold_until <= ?", (before,))
        except sqlite3.Error as exc:
            raise LeaseStoreError(_reason(exc), f"{self.path}: {exc}") from None
        holders, last = self._holders, int(before // _MINUTE)
        for minute in [m for m in self._due if m <= last]:
            kept = []
            for address in self._due.pop(minute):
                held = holders.get(address)
                if held is None:
                    continue
                if held.hold_until <= before:
                    del holders[address]
                elif int(held.hold_until // _MINUTE) == minute:
                    kept.append(address)  # later in the minute ``before`` is in
            if kept:
                self._due[minute] = kept
        for address in list(self._more):
            self._more[address] = [o for o in self._more[address] if o.hold_until > before]
            if not self._more[address]:
                del self._more[address]
        return cur.rowcount

    def changes(self) -> list[Lease]:
        return []

    def usage(self, now: float) -> dict[str, dict[str, int]] | None:
        return None

    def page(self, query: LeaseQuery, now: float) -> LeasePage | None:
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()
