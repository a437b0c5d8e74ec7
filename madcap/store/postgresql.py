"""Leases on a shared PostgreSQL database: several madcapd, one arbiter.

What the database guarantees, whatever the servers' code does:

- no two leases hold one address at one time: ``madcap_holds`` has an exclusion
  constraint over (scope, address range, [start, hold_until)) (btree_gist for the
  scope; PostgreSQL 15 has no inet range, so ``madcap_inetrange`` is one over inet,
  IPv4 and IPv6 alike). Allocation is optimistic: a server inserts the addresses it
  picked (at random cursors, see MadcapServer.scatter) and the constraint refuses
  the lease if another server committed them first; the refused lease's reply is
  dropped, the other server's lease is adopted, and the client's retransmission is
  answered with other addresses. Never check-then-insert.
- a retransmission gets the same bytes from any server: replies are stored in
  ``madcap_replies`` in the transaction of their lease change; a request another
  server already answered is refused here and its stored reply adopted.
- one clock: lease times are on the database's clock (``clock_timestamp()``, read at
  connect and every CLOCK_RESYNC seconds and carried on by the monotonic clock), never
  the host's; one reclaimer at a time (an advisory lock around the purge).
- the database down: commits raise LeaseStoreError("unavailable"), so nothing is
  acknowledged; reconnection is tried at most every RECONNECT_EVERY seconds from the
  daemon's loop, without a restart.

The connection is synchronous (psycopg 3) like SQLite's: a commit is one round trip
to a PL/pgSQL function (server-side prepared), and the daemon sends nothing of a batch
before it returns.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from madcap.leases import (
    ACTIVE,
    COMMITTED,
    CachedReply,
    CacheKey,
    CommitResult,
    Lease,
    LeasePage,
    LeaseQuery,
    LeaseStoreError,
    MemoryReplyCache,
)
from sapd.plumbing import pgconnect

CONNECT_TIMEOUT = 3  # seconds; the loop waits this long at most for an unreachable host
STATEMENT_TIMEOUT_MS = 5000  # a commit stuck behind a lock fails rather than hangs
RECONNECT_EVERY = 1.0  # seconds between reconnection attempts while the database is down
CLOCK_RESYNC = 10.0  # seconds between readings of the database's clock
REPLY_KEEP = 600.0  # seconds a stored reply is kept (RFC 2730 XID-REUSE-INTERVAL)
ADVISORY_MIGRATE = 0x6D61_6463_0001  # "madc" 1: one migration at a time
ADVISORY_RECLAIM = 0x6D61_6463_0002  # "madc" 2: one reclaimer at a time

_COLUMNS = ("lease_id, scope, addresses, start, end_time, state, client, granted, "
            "hold_until, xid")

# One step per version, applied in order inside one transaction under an advisory lock
# (several madcapd may start at once); never edited once released.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE EXTENSION IF NOT EXISTS btree_gist;
    CREATE TYPE madcap_inetrange AS RANGE (subtype = inet);
    CREATE TYPE madcap_timerange AS RANGE (subtype = float8, subtype_diff = float8mi);
    CREATE TABLE madcap_leases (
        lease_id bytea PRIMARY KEY,
        scope text NOT NULL,
        addresses text NOT NULL,
        start float8 NOT NULL,
        end_time float8 NOT NULL,
        state text NOT NULL,
        client text NOT NULL,
        granted float8 NOT NULL,
        hold_until float8 NOT NULL,
        xid bigint NOT NULL DEFAULT 0,
        server text NOT NULL,                          -- the madcapd that wrote it last
        writer xid8 NOT NULL DEFAULT pg_current_xact_id()  -- for the others' catch-up
    );
    CREATE INDEX madcap_leases_hold ON madcap_leases (hold_until);
    CREATE INDEX madcap_leases_writer ON madcap_leases (writer);
    -- one row per run of consecutive addresses of a lease, for as long as it holds them
    CREATE TABLE madcap_holds (
        lease_id bytea NOT NULL REFERENCES madcap_leases ON DELETE CASCADE,
        scope text NOT NULL,
        span madcap_inetrange NOT NULL,
        held madcap_timerange NOT NULL,
        CONSTRAINT madcap_holds_no_overlap
            EXCLUDE USING gist (scope WITH =, span WITH &&, held WITH &&)
    );
    CREATE INDEX madcap_holds_lease ON madcap_holds (lease_id);
    CREATE TABLE madcap_replies (
        xid bigint NOT NULL,
        msgtype int NOT NULL,
        lease_id bytea NOT NULL,
        client text NOT NULL,
        reply bytea,
        stamp float8 NOT NULL,
        server text NOT NULL,
        PRIMARY KEY (xid, msgtype, lease_id, client)
    );
    CREATE INDEX madcap_replies_stamp ON madcap_replies (stamp);
    -- One lease per element of the arrays, each in a subtransaction: a lease whose
    -- addresses another holds is skipped and named ('overlap'), as is an expiry of a
    -- lease that another server renewed or ended meanwhile, or a change of a lease
    -- that another host holds ('stale': the stored lease is what stands).
    CREATE FUNCTION madcap_commit(me text, ids bytea[], scopes text[], addrs text[],
                                  spans text[], starts float8[], ends float8[],
                                  states text[], clients text[], granteds float8[],
                                  holds float8[], xids bigint[])
    RETURNS TABLE (lease_id bytea, why text) LANGUAGE plpgsql AS $$
    DECLARE
        i int;
        written int;
    BEGIN
        FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
            BEGIN
                INSERT INTO madcap_leases AS l (lease_id, scope, addresses, start, end_time,
                    state, client, granted, hold_until, xid, server)
                VALUES (ids[i], scopes[i], addrs[i], starts[i], ends[i], states[i],
                        clients[i], granteds[i], holds[i], xids[i], me)
                ON CONFLICT ON CONSTRAINT madcap_leases_pkey DO UPDATE SET
                    scope = EXCLUDED.scope, addresses = EXCLUDED.addresses,
                    start = EXCLUDED.start, end_time = EXCLUDED.end_time,
                    state = EXCLUDED.state, client = EXCLUDED.client,
                    granted = EXCLUDED.granted, hold_until = EXCLUDED.hold_until,
                    xid = EXCLUDED.xid, server = EXCLUDED.server,
                    writer = pg_current_xact_id()
                WHERE (EXCLUDED.state <> 'expired'
                       OR (l.state = 'active' AND l.end_time = EXCLUDED.end_time))
                  -- a lease id is no secret (RFC 2730 s. 4): only its holder's host may
                  -- change its lease, whichever server it asks
                  AND regexp_replace(l.client, ':[^:]*$', '')
                      = regexp_replace(EXCLUDED.client, ':[^:]*$', '');
                GET DIAGNOSTICS written = ROW_COUNT;
                IF written = 0 THEN
                    -- an expiry already written by another server is no news
                    IF NOT EXISTS (SELECT 1 FROM madcap_leases l WHERE l.lease_id = ids[i]
                                   AND l.state = 'expired' AND l.end_time = ends[i]) THEN
                        lease_id := ids[i]; why := 'stale'; RETURN NEXT;
                    END IF;
                    CONTINUE;
                END IF;
                DELETE FROM madcap_holds h WHERE h.lease_id = ids[i];
                IF starts[i] < holds[i] THEN
                    INSERT INTO madcap_holds (lease_id, scope, span, held)
                    SELECT ids[i], scopes[i],
                           madcap_inetrange(split_part(s, '-', 1)::inet,
                                            split_part(s, '-', 2)::inet, '[]'),
                           madcap_timerange(starts[i], holds[i], '[)')
                    FROM unnest(string_to_array(spans[i], ' ')) AS s;
                END IF;
            EXCEPTION WHEN exclusion_violation THEN
                lease_id := ids[i]; why := 'overlap'; RETURN NEXT;
            END;
        END LOOP;
    END $$;
    """,
)


def _refusing_moved_leases(first: str) -> str:
    """Step 2: madcap_commit as in step 1, and refusing (``stale``) a write that moves
    a lease still active at the writer's grant time onto other addresses. One server
    answers a new transaction for a lease it holds with its addresses; a second server
    that has not caught up would pick others, and its write would free the first ones
    at once, with no guard time, while their client holds an ACK for them."""
    function = first[first.index("CREATE FUNCTION madcap_commit"):]
    guard = "                  -- a lease id is no secret"
    assert function.count(guard) == 1
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
        guard, "                  AND NOT (l.state = 'active' AND l.end_time > "
        "EXCLUDED.granted\n                           AND l.addresses <> "
        "EXCLUDED.addresses)\n" + guard)


MIGRATIONS += (_refusing_moved_leases(MIGRATIONS[0]),)
SCHEMA_VERSION = len(MIGRATIONS)

_SYNC = f"""
    SELECT {_COLUMNS}, pg_snapshot_xmin(pg_current_snapshot())::text
    FROM madcap_leases WHERE writer >= %s::xid8 AND server <> %s"""

_PUT_REPLIES = """
    WITH new (xid, msgtype, lease_id, client, reply, stamp) AS (
        SELECT * FROM unnest(%s::bigint[], %s::int[], %s::bytea[], %s::text[], %s::bytea[],
                             %s::float8[])),
    put AS (
        INSERT INTO madcap_replies AS r (xid, msgtype, lease_id, client, reply, stamp, server)
        SELECT new.*, %s FROM new
        ON CONFLICT (xid, msgtype, lease_id, client) DO UPDATE
            SET reply = EXCLUDED.reply, stamp = EXCLUDED.stamp
            WHERE r.server = EXCLUDED.server
        RETURNING r.xid, r.msgtype, r.lease_id, r.client)
    SELECT new.xid, new.msgtype, new.lease_id, new.client FROM new
    LEFT JOIN put USING (xid, msgtype, lease_id, client) WHERE put.xid IS NULL"""

_OVERLAPPING = f"""
    SELECT DISTINCT {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))}
    FROM unnest(%s::bytea[], %s::text[], %s::text[], %s::float8[], %s::float8[])
        AS c (lease_id, scope, spans, start, hold)
    CROSS JOIN LATERAL unnest(string_to_array(c.spans, ' ')) AS s (span)
    JOIN madcap_holds o ON o.scope = c.scope AND o.lease_id <> c.lease_id
        AND o.span && madcap_inetrange(split_part(s.span, '-', 1)::inet,
                                       split_part(s.span, '-', 2)::inet, '[]')
        AND o.held && madcap_timerange(c.start, c.hold, '[)')
    JOIN madcap_leases l ON l.lease_id = o.lease_id"""


def spans(addresses: Iterable[str]) -> str:
    """The addresses as runs of consecutive ones, "FIRST-LAST FIRST-LAST"."""
    values = sorted(ipaddress.ip_address(a) for a in addresses)
    runs: list[list[Any]] = []
    for value in values:
        if runs and int(value) == int(runs[-1][1]) + 1 and value.version == runs[-1][1].version:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return " ".join(f"{a}-{b}" for a, b in runs)


def _address_order(lease: Lease) -> tuple[str, int, int]:
    first = min(ipaddress.ip_address(a) for a in lease.addresses) if lease.addresses else None
    return (lease.scope, first.version if first else 0, int(first) if first else 0)


def _lease(r: Sequence[Any]) -> Lease:
    return Lease(bytes(r[0]), r[1], tuple(r[2].split()), r[3], r[4], r[5], r[6], r[7], r[8],
                 int(r[9]))


def read_password(password_file: str | None) -> str | None:
    """The password from ``[store] password_file`` (its first line), or None: then libpq
    takes PGPASSWORD or the pgpass file."""
    if password_file is None:
        return None
    try:
        return pgconnect.read_password(password_file)
    except pgconnect.PasswordFileError as exc:
        raise LeaseStoreError("config", str(exc)) from None


def _like(text: str) -> str:
    """``text`` matched literally in a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reason(exc: psycopg.Error) -> str:
    if isinstance(exc, psycopg.OperationalError):
        return "unavailable"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "timeout"
    return "database"


@dataclass(frozen=True)
class MigrationReport:
    before: int
    after: int


class PostgresReplyCache(MemoryReplyCache):
    """This server's replies in memory, every server's in the database: a miss here is
    looked up there, so a retransmission sent to another server gets the first one's
    bytes. New entries are written with the next commit (the store's ``pending``)."""

    __slots__ = ("ahead", "cutoff", "fetched", "looked_up", "pending", "store")

    def __init__(self, store: PostgresLeaseStore) -> None:
        super().__init__()
        self.store = store
        self.pending: dict[CacheKey, CachedReply] = {}
        self.cutoff = float("-inf")  # the last sweep's: older stored replies are stale
        self.ahead = float("inf")
        # the last prefetch: what the database had for a batch's keys, and which keys
        # were asked (a miss among them needs no second look)
        self.fetched: dict[CacheKey, CachedReply] = {}
        self.looked_up: set[CacheKey] = set()
        self.get = self._get

    def prefetch(self, keys: list[CacheKey]) -> None:
        wanted = [k for k in keys if self.lookup(k) is None]
        self.fetched = self.store.stored_replies(wanted) if wanted else {}
        self.looked_up = set(wanted)

    def _get(self, key: CacheKey) -> CachedReply | None:
        found = self.lookup(key)
        if found is not None:
            return found
        stored = self.fetched.get(key) if key in self.looked_up else \
            self.store.stored_reply(key)
        if stored is not None and self.cutoff <= stored.stamp <= self.ahead:
            return stored
        return None

    def put(self, key: CacheKey, reply: bytes | None,
            stamp: float) -> bool:
        self.pending[key] = CachedReply(reply, stamp)
        return super().put(key, reply, stamp)

    def discard(self, key: CacheKey) -> None:
        self.pending.pop(key, None)
        super().discard(key)

    def expire(self, cutoff: float, now: float) -> None:
        self.cutoff, self.ahead = cutoff, now
        super().expire(cutoff, now)
        for key in [k for k, c in self.pending.items() if not cutoff <= c.stamp <= now]:
            del self.pending[key]  # not worth writing any more

    def adopt(self, key: CacheKey, reply: CachedReply) -> None:
        """Another server's reply to this request: ours is forgotten, its is answered."""
        self.pending.pop(key, None)
        super().discard(key)
        super().put(key, reply.reply, reply.stamp)


class PostgresLeaseStore:
    backend = "postgresql"
    shared = True

    def __init__(self, dsn: str, password: str | None = None, migrate: bool = True,
                 server_name: str | None = None, check: bool = True) -> None:
        self.dsn = dsn
        self.password = password
        self.name = server_name or f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        self.commits = 0
        self.problem: str | None = None
        self.schema_version = 0
        self.reconnects = 0  # connections made after the first (recoveries)
        self._cache = PostgresReplyCache(self)
        self._db: psycopg.Connection[Any] | None = None
        self._next_attempt = 0.0
        self._clock_offset = 0.0  # database epoch seconds minus time.monotonic()
        self._clock_read = float("-inf")
        self._seen: str = "0"  # xid8: rows written by transactions from here are re-read
        try:
            self._connect()
            if migrate:
                self.migrate()
            if check:
                self._check_version()
        except psycopg.Error as exc:
            self.close()
            raise LeaseStoreError(_reason(exc), f"{self._where()}: {exc}") from None

    # -- the connection --------------------------------------------------------------------
    def _where(self) -> str:
        return f"postgresql ({pgconnect.shown_dsn(self.dsn)})"

    def _connect(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {}
        if self.password is not None:
            extra["password"] = self.password
        # autocommit: a read is one round trip; writes are explicit transactions
        db = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                             prepare_threshold=0,
                             options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                             application_name="madcapd", **extra)
        if self._db is not None:
            self.reconnects += 1
        self._db = db
        self._read_clock()
        self.problem = None
        return db

    def _conn(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one (at most every RECONNECT_EVERY seconds while
        the database is down); raises LeaseStoreError('unavailable')."""
        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        if time.monotonic() < self._next_attempt:
            raise LeaseStoreError("unavailable", self.problem or "database unavailable")
        try:
            if db is not None:
                db.close()
            return self._connect()
        except psycopg.Error as exc:
            self._down(exc)
            raise LeaseStoreError("unavailable", f"{self._where()}: {exc}") from None

    def _down(self, exc: BaseException) -> None:
        self._next_attempt = time.monotonic() + RECONNECT_EVERY
        self.problem = f"unavailable: {self._where()}: {str(exc).strip()}"

    def _failed(self, exc: psycopg.Error) -> LeaseStoreError:
        reason = _reason(exc)
        db = self._db
        if reason == "unavailable" or db is None or db.broken:
            self._down(exc)
            reason = "unavailable"
        return LeaseStoreError(reason, f"{self._where()}: {str(exc).strip()}")

    def _read_clock(self) -> None:
        assert self._db is not None
        before = time.monotonic()
        row = self._db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        after = time.monotonic()
        assert row is not None
        self._clock_offset = float(row[0]) - (before + after) / 2
        self._clock_read = after

    def now(self) -> float:
        """The database's clock, carried on by this host's monotonic clock between
        readings (so that every server's lease times agree, whatever its clock says)."""
        return time.monotonic() + self._clock_offset

    # -- schema ----------------------------------------------------------------------------
    def _version(self, db: psycopg.Connection[Any]) -> int:
        """The schema's version, 0 for none. Looked up, never created here: a role that
        may only read and write the tables of a migrated schema has no right to create
        (and PostgreSQL checks it even for CREATE TABLE IF NOT EXISTS)."""
        found = db.execute("SELECT to_regclass('madcap_schema_version') IS NOT NULL"
                           ).fetchone()
        if not found or not found[0]:
            return 0
        row = db.execute("SELECT max(version) FROM madcap_schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def migrate(self, check_only: bool = False) -> MigrationReport:
        """Bring the schema to SCHEMA_VERSION (or, check_only, just say where it is)."""
        try:
            return self._migrate(check_only)
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def _migrate(self, check_only: bool) -> MigrationReport:
        db = self._conn()
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_MIGRATE,))
            before = self._version(db)
            if before > SCHEMA_VERSION:
                raise LeaseStoreError("schema", f"{self._where()}: lease schema version "
                                      f"{before} is newer than this madcapd's "
                                      f"({SCHEMA_VERSION}); upgrade madcapd")
            if check_only:
                return MigrationReport(before, before)
            if before < SCHEMA_VERSION:
                db.execute("CREATE TABLE IF NOT EXISTS madcap_schema_version "
                           "(version int NOT NULL)")
            for version in range(before + 1, SCHEMA_VERSION + 1):
                db.execute(MIGRATIONS[version - 1].encode(), prepare=False)
                db.execute("INSERT INTO madcap_schema_version VALUES (%s)", (version,))
        self.schema_version = SCHEMA_VERSION
        return MigrationReport(before, SCHEMA_VERSION)

    def _check_version(self) -> None:
        report = self.migrate(check_only=True)
        self.schema_version = report.before
        if report.before != SCHEMA_VERSION:
            raise LeaseStoreError("schema", f"{self._where()}: lease schema version "
                                  f"{report.before}, this madcapd needs {SCHEMA_VERSION}: "
                                  "run madcapd --migrate")

    # -- reads -----------------------------------------------------------------------------
    def _select(self, where: str, args: tuple[object, ...]) -> list[Lease]:
        db = self._conn()
        try:
            rows = db.execute(f"SELECT {_COLUMNS} FROM madcap_leases {where}", args).fetchall()
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return [_lease(r) for r in rows]

    def load(self, now: float) -> list[Lease]:
        self._mark_seen()  # first: what commits after it is read again by changes()
        return self._select("WHERE hold_until > %s", (now,))

    def _mark_seen(self) -> None:
        db = self._conn()
        row = db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        assert row is not None
        self._seen = str(row[0])

    def get(self, lease_id: bytes) -> Lease | None:
        found = self._select("WHERE lease_id = %s", (lease_id,))
        return found[0] if found else None

    def by_address(self, address: str) -> list[Lease]:
        found = self._select("WHERE ' ' || addresses || ' ' LIKE %s", (f"% {address} %",))
        return [le for le in found if address in le.addresses]

    def by_client(self, client: str) -> list[Lease]:
        return self._select("WHERE client = %s", (client,))

    def changes(self) -> list[Lease]:
        """Leases other servers wrote since the last call (or the load): a transaction
        still open at the last reading is read again, so none is missed."""
        db = self._conn()
        try:
            rows = db.execute(_SYNC, (self._seen, self.name)).fetchall()
            if not rows:
                row = db.execute(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
                assert row is not None
                self._seen = str(row[0])
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        if rows:
            self._seen = str(rows[0][10])
        return [_lease(r) for r in rows]

    def stored_reply(self, key: CacheKey) -> CachedReply | None:
        """Another server's reply to this request, if the database answers now."""
        db = self._db
        if db is None or db.closed or db.broken:
            return None
        try:
            row = db.execute("SELECT reply, stamp FROM madcap_replies WHERE xid = %s AND "
                             "msgtype = %s AND lease_id = %s AND client = %s", key).fetchone()
        except psycopg.Error as exc:
            self._failed(exc)
            return None
        if row is None:
            return None
        return CachedReply(bytes(row[0]) if row[0] is not None else None, float(row[1]))

    def stored_replies(self, keys: list[CacheKey]
                       ) -> dict[CacheKey, CachedReply]:
        """The stored replies to these requests (one round trip); {} while the database
        is down (the store says so on its next commit)."""
        db = self._db
        if db is None or db.closed or db.broken:
            return {}
        try:
            rows = db.execute(
                "SELECT r.xid, r.msgtype, r.lease_id, r.client, r.reply, r.stamp "
                "FROM unnest(%s::bigint[], %s::int[], %s::bytea[], %s::text[]) "
                "AS k (xid, msgtype, lease_id, client) JOIN madcap_replies r "
                "USING (xid, msgtype, lease_id, client)",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                 [k[3] for k in keys])).fetchall()
        except psycopg.Error as exc:
            self._failed(exc)
            return {}
        return {(int(x), int(m), bytes(lid), c): CachedReply(
                    bytes(reply) if reply is not None else None, float(stamp))
                for x, m, lid, c, reply, stamp in rows}

    # -- writes ----------------------------------------------------------------------------
    def commit(self, leases: Sequence[Lease]) -> CommitResult:
        replies = self._cache.pending
        if not leases and not replies:
            return COMMITTED
        db = self._conn()
        keys = sorted(replies)  # in one order on every server (row locks, as below)
        try:
            with db.transaction():
                lost: dict[CacheKey, CachedReply] = {}
                if not leases:
                    # only replies (offers, scope lists): no need to wait for the disk,
                    # losing them in a database crash costs a client one retransmission
                    db.execute("SET LOCAL synchronous_commit = off")
                if keys:
                    lost = self._put_replies(db, keys, replies)
                gone = {k[2] for k in lost}
                # in address order: two servers' batches then wait for each other's rows in
                # one order, not into a deadlock
                todo = sorted((le for le in leases if le.lease_id not in gone),
                              key=_address_order)
                runs = [spans(le.addresses) for le in todo]
                rows = db.execute(
                    "SELECT lease_id, why FROM madcap_commit(%s, %s::bytea[], %s::text[], "
                    "%s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[], "
                    "%s::text[], %s::float8[], %s::float8[], %s::bigint[])",
                    (self.name, [le.lease_id for le in todo], [le.scope for le in todo],
                     [" ".join(le.addresses) for le in todo], runs,
                     [le.start for le in todo], [le.end for le in todo],
                     [le.state for le in todo], [le.client for le in todo],
                     [le.granted for le in todo], [le.hold_until for le in todo],
                     [le.xid for le in todo])).fetchall() if todo else []
                refused = {bytes(r[0]) for r in rows}
                taken: list[Lease] = []
                if refused:
                    taken = self._taken(db, todo, runs, rows)
                    db.execute("DELETE FROM madcap_replies WHERE server = %s AND "
                               "lease_id = ANY(%s)", (self.name, list(refused)))
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        self.commits += 1
        for key in keys:
            replies.pop(key, None)
        for key, reply in lost.items():
            self._cache.adopt(key, reply)
        if time.monotonic() - self._clock_read >= CLOCK_RESYNC:
            try:
                self._read_clock()
            except psycopg.Error as exc:
                self._failed(exc)
        refused |= gone & {le.lease_id for le in leases}
        if refused:
            return CommitResult(frozenset(refused), tuple(taken))
        return COMMITTED

    def _put_replies(self, db: psycopg.Connection[Any], keys: list[CacheKey],
                     replies: dict[CacheKey, CachedReply]
                     ) -> dict[CacheKey, CachedReply]:
        """Store the batch's replies; the keys another server answered first, with its
        replies."""
        lost_keys = db.execute(_PUT_REPLIES, (
            [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
            [k[3] for k in keys], [replies[k].reply for k in keys],
            [replies[k].stamp for k in keys], self.name)).fetchall()
        lost = {}
        for xid, msgtype, lease_id, client in lost_keys:
            key = (int(xid), int(msgtype), bytes(lease_id), client)
            row = db.execute("SELECT reply, stamp FROM madcap_replies WHERE xid = %s AND "
                             "msgtype = %s AND lease_id = %s AND client = %s", key).fetchone()
            if row is not None:
                lost[key] = CachedReply(bytes(row[0]) if row[0] is not None else None,
                                        float(row[1]))
        return lost

    def _taken(self, db: psycopg.Connection[Any], todo: list[Lease], runs: list[str],
               rows: list[tuple[Any, ...]]) -> list[Lease]:
        """The leases in the way of the refused ones: those holding their addresses, and
        the stored version of a lease whose expiry came too late."""
        why = {bytes(r[0]): r[1] for r in rows}
        overlap = [(le, run) for le, run in zip(todo, runs, strict=True)
                   if why.get(le.lease_id) == "overlap"]
        taken: list[Lease] = []
        if overlap:
            found = db.execute(_OVERLAPPING, (
                [le.lease_id for le, _ in overlap], [le.scope for le, _ in overlap],
                [run for _, run in overlap], [le.start for le, _ in overlap],
                [le.hold_until for le, _ in overlap])).fetchall()
            taken += [_lease(r) for r in found]
        stale = [lid for lid, w in why.items() if w == "stale"]
        if stale:
            found = db.execute(f"SELECT {_COLUMNS} FROM madcap_leases WHERE lease_id = ANY(%s)",
                               (stale,)).fetchall()
            taken += [_lease(r) for r in found]
        return taken

    def purge(self, before: float) -> int:
        """Forget leases whose guard time is over, and old replies: by one server at a
        time (the others find the lock taken and skip this round)."""
        db = self._conn()
        try:
            with db.transaction():
                row = db.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                 (ADVISORY_RECLAIM,)).fetchone()
                if not row or not row[0]:
                    return 0
                cur = db.execute("DELETE FROM madcap_leases WHERE hold_until <= %s",
                                 (before,))
                count = cur.rowcount
                db.execute("DELETE FROM madcap_replies WHERE stamp < %s",
                           (before - REPLY_KEEP,))
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return count

    def reply_cache(self) -> PostgresReplyCache:
        return self._cache

    def check(self) -> str | None:
        return self.problem

    def usage(self, now: float) -> dict[str, dict[str, int]]:
        """Per scope, addresses leased and held (ended, in their guard time), counted in
        the database: what every server reports alike."""
        db = self._conn()
        try:
            rows = db.execute(
                "SELECT scope, state = 'active' AND end_time > %s, "
                "sum(array_length(string_to_array(addresses, ' '), 1)) "
                "FROM madcap_leases WHERE hold_until > %s GROUP BY 1, 2",
                (now, now)).fetchall()
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        out: dict[str, dict[str, int]] = {}
        for scope, active, count in rows:
            out.setdefault(scope, {"leased": 0, "held": 0})[
                "leased" if active else "held"] += int(count or 0)
        return out

    def page(self, query: LeaseQuery, now: float) -> LeasePage:
        """The listing from the database: the same on every server."""
        where = ["hold_until > %s" if query.include_held else
                 "state = %s AND end_time > %s"]
        args: list[object] = [now] if query.include_held else [ACTIVE, now]
        if query.scope is not None:
            where.append("scope = %s")
            args.append(query.scope)
        if query.state is not None:
            where.append("state = %s")
            args.append(query.state)
        if query.address is not None:
            where.append("' ' || addresses || ' ' LIKE %s")
            args.append(f"% {_like(query.address)} %")
        if query.client is not None:
            where.append("client LIKE %s")
            args.append(f"{_like(query.client)}%")
        if query.lease_id is not None:
            where.append("encode(lease_id, 'hex') LIKE %s")
            args.append(f"{_like(query.lease_id.lower())}%")
        db = self._conn()
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS}, count(*) OVER () FROM madcap_leases "
                f"WHERE {' AND '.join(where)} ORDER BY scope, addresses, lease_id "
                "LIMIT %s OFFSET %s", (*args, query.limit, query.offset)).fetchall()
            total = int(rows[0][10]) if rows else 0
            if not rows and query.offset:
                found = db.execute(f"SELECT count(*) FROM madcap_leases "
                                   f"WHERE {' AND '.join(where)}", args).fetchone()
                total = int(found[0]) if found else 0
        except psycopg.Error as exc:
            raise self._failed(exc) from None
        return LeasePage([_lease(r) for r in rows], total, query.limit, query.offset)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._db = None

