"""The directory on a PostgreSQL server that several sapd sites share.

Every row belongs to one site (``[site]``, default the host name): a site writes,
refreshes and deletes only its own rows (keyed on (site, id)), so two sites never refuse
each other's writes, and reads see the whole campus. Each site keeps a row in
``sapd_sites``: its generation (a restart makes its heard rows stale until heard again,
as with SQLite), a heartbeat dated by the database's ``now()`` at every write and every
second between, and how long a silence means it is gone (``silent_after``). A silent
site's rows read as stale; once they are past their expiry (the owner's own rules, moved
onto the database's clock by the owner's last measured skew), any live site deletes them,
one at a time (an advisory lock).

Writes reach the server as a COPY into a temporary table and one INSERT ... ON CONFLICT
per batch: a handful of round trips whatever the batch size.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import make_conninfo

from sapd.plumbing.errors import StoreUnavailable, StoreUnusable
from sapd.plumbing.pgconnect import connection_options
from sapd.records import (
    Applied,
    Liveness,
    SearchQuery,
    SessionRecord,
    Writes,
    heard_via_from_json,
    heard_via_to_json,
    listing_from_json,
    listing_to_json,
    object_from_json,
    object_to_json,
    shared_media_types,
)

SCHEMA_VERSION = 2
NOTIFY_CHANNEL = "sapd_directory"  # payload: the site that committed
SWEEP_LOCK = 0x5A9D0001  # pg_try_advisory_xact_lock key: one sweeper at a time
REMOVED_KEPT = 600.0  # seconds a removal is kept for other sites' followers
PRUNE_EVERY = 60.0  # seconds between prunes of old removals
SITE_LOCK = 0x5A9D  # pg_try_advisory_lock(SITE_LOCK, hashtext(site)): one sapd a site
RECONNECT_PAUSE = 1.0  # seconds after a failed connect before the next is tried

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE sapd_sites (
        site text PRIMARY KEY,
        generation bigint NOT NULL DEFAULT 1,   -- bumped at each start of the site's sapd
        heartbeat timestamptz NOT NULL DEFAULT now(),  -- the database's clock, never ours
        silent_after double precision NOT NULL, -- seconds without a heartbeat: gone
        skew double precision NOT NULL DEFAULT 0,  -- the site's wall clock minus now()
        content bigint NOT NULL DEFAULT 0       -- bumped by writes that change searches
    );
    CREATE TABLE sapd_sessions (
        site text NOT NULL REFERENCES sapd_sites ON DELETE CASCADE,
        id text NOT NULL,
        source text NOT NULL,
        identity text NOT NULL,
        auth_tag text NOT NULL,
        version text NOT NULL,                  -- o= sess-version: 1*DIGIT, any length
        msg_hash integer NOT NULL,
        origin_address text NOT NULL,
        name text NOT NULL,
        info text,
        sdp text NOT NULL,
        scope text NOT NULL,
        sap_group text NOT NULL,
        first_seen double precision NOT NULL,
        last_seen double precision NOT NULL,
        local boolean NOT NULL,
        owner_uid bigint,
        acl text NOT NULL,
        blob text NOT NULL,
        options text NOT NULL,
        period double precision,
        expires double precision,
        heard_gen bigint NOT NULL,              -- the site's generation that last heard it
        content_crc bigint NOT NULL,
        groups text[] NOT NULL,
        media_types text NOT NULL,
        attributes jsonb NOT NULL,              -- [[name, value], ...]
        haystack text NOT NULL,                 -- lower(name, info): substring search
        verification text NOT NULL,
        signed_by text NOT NULL,
        signer_key text NOT NULL,
        header_source text NOT NULL,
        heard_via text NOT NULL,
        has_range boolean NOT NULL,             -- a group entry is a FIRST-LAST range
        change bigint NOT NULL DEFAULT 0,       -- the site's change number that wrote it
        first_change bigint NOT NULL DEFAULT 0, -- and the one that inserted it
        PRIMARY KEY (site, id)
    );
    CREATE INDEX sapd_sessions_change ON sapd_sessions (site, change);
    -- what was deleted or expired, for other sites' followers (kept REMOVED_KEPT)
    CREATE TABLE sapd_removed (
        site text NOT NULL,
        change bigint NOT NULL,
        id text NOT NULL,
        kind text NOT NULL,                     -- deleted, expired
        name text NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX sapd_removed_change ON sapd_removed (site, change);
    CREATE INDEX sapd_removed_at ON sapd_removed (at);
    CREATE INDEX sapd_sessions_name ON sapd_sessions ((lower(name) COLLATE "C"), id, site);
    CREATE INDEX sapd_sessions_groups ON sapd_sessions USING gin (groups);
    CREATE INDEX sapd_sessions_ranges ON sapd_sessions (site) WHERE has_range;
    CREATE INDEX sapd_sessions_source ON sapd_sessions (source);
    CREATE INDEX sapd_sessions_origin ON sapd_sessions (origin_address);
    CREATE INDEX sapd_sessions_expires ON sapd_sessions (site, expires);
    -- a range entry's end as an address (NULL for anything else): a cast of its own,
    -- since SQL may evaluate a cast before the test that guards it
    CREATE FUNCTION sapd_inet(text) RETURNS inet LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN RETURN $1::inet; EXCEPTION WHEN others THEN RETURN NULL; END $$;
    """,
    # What the session list shows of the attributes (codecs, clock, redundancy), written
    # with them, so that a light read (a list page) leaves the attributes out. Rows
    # written before have '' and are read with their attributes instead.
    2: """
    ALTER TABLE sapd_sessions ADD COLUMN listing text NOT NULL DEFAULT '';
    """,
}

# Stored columns, in the order of SessionRecord's fields where a field has one.
_COLUMNS = ("site", "id", "source", "identity", "auth_tag", "version", "msg_hash",
            "origin_address", "name", "info", "sdp", "scope", "sap_group", "first_seen",
            "last_seen", "local", "owner_uid", "acl", "blob", "options", "period", "expires",
            "heard_gen", "content_crc", "groups", "media_types", "attributes", "haystack",
            "verification", "signed_by", "signer_key", "header_source", "heard_via",
            "has_range", "listing")
_COLUMN_LIST = ", ".join(_COLUMNS)
_UPDATE_LIST = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[2:])
# What a read selects: the row (light: without SDP and attributes, but with their
# listing, or with them where no listing was stored; the engine's: without either) and
# whether it is stale now: not heard since its site's sapd restarted, or its site is
# silent.
_SILENT = "t.heartbeat < now() - make_interval(secs => t.silent_after)"
_STALE = f"((NOT s.local AND s.heard_gen < t.generation) OR {_SILENT})"
_READ = ", ".join(f"s.{c}" for c in _COLUMNS) + f", {_STALE}"
_LIGHT_READ = _READ.replace("s.sdp,", "'',").replace(
    "s.attributes,", "CASE WHEN s.listing = '' THEN s.attributes ELSE '[]'::jsonb END,")
_ENGINE_READ = _READ.replace("s.sdp,", "'',").replace(
    "s.attributes,", "'[]'::jsonb,").replace("s.listing,", "'',")
_FROM = " FROM sapd_sessions s JOIN sapd_sites t ON t.site = s.site"
_ORDER = ' ORDER BY lower(s.name) COLLATE "C", s.id, s.site'


class SchemaError(StoreUnusable):
    """The database was migrated by a newer sapd."""


class SiteInUse(StoreUnusable):
    """Another running sapd writes the directory as this site."""


def _row(r: SessionRecord, site: str, generation: int) -> tuple[Any, ...]:
    return (site, r.id, r.source, r.identity, r.auth_tag, str(r.version), r.msg_hash,
            r.origin_address, r.name, r.info, r.sdp, r.scope, r.sap_group, r.first_seen,
            r.last_seen, r.local, r.owner_uid, object_to_json(r.acl), object_to_json(r.blob),
            object_to_json(r.options), r.period, r.expires, 0 if r.stale else generation,
            r.content_crc or zlib.crc32(r.sdp.encode()), list(r.groups),
            " ".join(r.media_types), json.dumps(r.attributes),
            f"{r.name}\n{r.info or ''}".lower(), r.verification, r.signed_by, r.signer_key,
            r.header_source, heard_via_to_json(r.heard_via),
            any("-" in g for g in r.groups), listing_to_json(r.attributes))


def _record(row: tuple[Any, ...]) -> SessionRecord:
    (site, sid, source, identity, auth_tag, version, msg_hash, origin_address, name, info,
     sdp, scope, sap_group, first_seen, last_seen, local, owner_uid, acl, blob, options,
     period, expires, _gen, content_crc, groups, media_types, attributes, _hay,
     verification, signed_by, signer_key, header_source, heard_via, _range, listing,
     stale) = row
    return SessionRecord(
        id=sid, source=source, identity=identity, version=int(version), msg_hash=msg_hash,
        origin_address=origin_address, name=name, info=info, sdp=sdp, scope=scope,
        sap_group=sap_group, first_seen=first_seen, last_seen=last_seen, local=local,
        owner_uid=owner_uid, auth_tag=auth_tag, acl=object_from_json(acl),
        blob=object_from_json(blob),
        options=object_from_json(options), period=period, expires=expires, stale=bool(stale),
        groups=tuple(groups), media_types=shared_media_types(tuple(media_types.split())),
        attributes=tuple((n, v) for n, v in attributes), content_crc=content_crc,
        verification=verification, signed_by=signed_by, signer_key=signer_key,
        header_source=header_source, heard_via=heard_via_from_json(heard_via), site=site,
        listing=listing_from_json(listing))


def conninfo(dsn: str, password_file: str | None) -> str:
    """The DSN with a connect timeout and the password file's password (in memory only)."""
    return make_conninfo(dsn, **connection_options(dsn, password_file))


Change = tuple[str, SessionRecord]  # (new | changed | deleted | expired, the record)


def _removed(site: str, sid: str, name: str) -> SessionRecord:
    """What a removal tells another site: which session of which site, by name."""
    return SessionRecord(id=sid, source="", identity="", version=0, msg_hash=0,
                         origin_address="", name=name, info=None, sdp="", scope="",
                         sap_group="", first_seen=0.0, last_seen=0.0, site=site)


def unreachable(exc: BaseException) -> bool:
    """Is this a failure of the connection or the server (it passes), not of a value?"""
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and not \
        isinstance(exc, pgerrors.QueryCanceled)


def classify(exc: BaseException) -> tuple[str, bool]:
    """(reason, passing) of a psycopg error raised while applying a batch."""
    if isinstance(exc, pgerrors.DiskFull):
        return "disk_full", True
    if isinstance(exc, (pgerrors.InsufficientResources, pgerrors.LockNotAvailable,
                        pgerrors.DeadlockDetected, pgerrors.SerializationFailure)):
        return "locked", True
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        return "read_only", True
    if unreachable(exc):
        return "database_unreachable", True
    if isinstance(exc, psycopg.IntegrityError):
        return "constraint", False
    if isinstance(exc, psycopg.DataError):  # a NUL in text, a number out of range
        return "unstorable_value", False
    if isinstance(exc, psycopg.DatabaseError):
        return "database_error", True
    return "internal_error", False


class PostgresDirectory:
    """One site's view of the shared directory: reads the campus, writes its own rows."""

    def __init__(self, dsn: str, site: str, password_file: str | None = None,
                 silent_after: float = 30.0, migrate: bool = True,
                 exclusive: bool = False) -> None:
        """``exclusive``: the daemon's own reader, which holds the site for as long as it
        runs (a session advisory lock): a second sapd with the same site is refused."""
        if not site:
            raise ValueError("a site name is needed to write a shared directory")
        self.site = site
        self.silent_after = silent_after
        self._conninfo = conninfo(dsn, password_file)
        self._lock = threading.RLock()
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None
        self.generation = 1
        self.connects = 0
        self._joined = False
        self._retry_at = 0.0  # monotonic time before which no connect is tried
        self._temp_tables: set[str] = set()  # created on this connection
        self._prune_at = 0.0  # monotonic time of the next prune of sapd_removed
        self._exclusive = exclusive
        # this directory's connections, told apart from any other sapd's (see
        # _end_silent_holder, by the token: the server cuts the name at 63 bytes)
        self._token = f"sapd {os.urandom(4).hex()} "
        self._application_name = self._token + site
        try:
            self._connect()
            if migrate:
                self.migrate()
            self._join()
        except psycopg.Error as exc:
            self._drop()
            raise StoreUnusable(f"PostgreSQL directory: {exc}".strip()) from None

    # -- the connection -------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, made again if it broke. After a connect that failed, the next
        attempt waits RECONNECT_PAUSE: the API's reads run on the event loop, and each
        attempt at an unreachable host could take the connect timeout."""
        if self._db is None or self._db.closed or self._db.broken:
            self._drop()
            if time.monotonic() < self._retry_at:
                raise psycopg.OperationalError("the directory database did not answer "
                                               "just now; trying again shortly")
            try:
                db: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                    self._conninfo, autocommit=True,
                    application_name=self._application_name)
            except psycopg.OperationalError:
                self._retry_at = time.monotonic() + RECONNECT_PAUSE
                raise
            self._db = db
            self._temp_tables = set()
            self.connects += 1
            if self._exclusive:
                self._hold_site(db)
            if self._joined:  # a reconnect: the generation may have moved meanwhile
                self.generation = self._read_generation(db)
        return self._db

    def _hold_site(self, db: psycopg.Connection[tuple[Any, ...]]) -> None:
        take = ("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (SITE_LOCK, self.site))
        held = db.execute(*take).fetchone()
        if held != (True,) and self._end_silent_holder(db):
            held = db.execute(*take).fetchone()
        if held != (True,):
            self._drop()
            message = (f"site {self.site!r} is in use by another sapd on this directory "
                       "database: give each sapd its own site name")
            # at start: refused; later (another took it while the server was away): the
            # reads fail as unavailable until it is ours again
            raise StoreUnavailable(message) if self._joined else SiteInUse(message)

    def _end_silent_holder(self, db: psycopg.Connection[tuple[Any, ...]]) -> bool:
        """End the backend that holds this site's lock if it is no live sapd: the site's
        heartbeat has been silent for longer than its silent_after (a live sapd beats
        every second), or the backend is this directory's own earlier connection (lost
        in a network partition). The server keeps such a connection until its TCP
        keepalive gives up, 2 h by default. True if one was ended."""
        try:
            row = db.execute(
                "SELECT bool_or(pg_terminate_backend(l.pid, 1000)) FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "JOIN sapd_sites t ON t.site = %s "
                f"AND (starts_with(a.application_name, %s) OR {_SILENT}) "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) "
                "AND l.classid = %s::bigint::oid "
                "AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid "
                "AND l.pid <> pg_backend_pid()",
                (self.site, self._token, SITE_LOCK, self.site)).fetchone()
        except psycopg.Error:  # no right to end it (another role): refused as before
            return False
        return bool(row and row[0])

    def _drop(self) -> None:
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._db = None

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """The connection, reconnected if it broke; a failure of the server or the
        network is StoreUnavailable for readers (the API answers 503), and the next use
        tries again."""
        with self._lock:
            try:
                yield self._connect()
            except psycopg.Error as exc:
                # a temporary table made in a transaction that rolled back is gone
                self._temp_tables.clear()
                if unreachable(exc):
                    self._drop()
                    raise StoreUnavailable(f"the directory database is unreachable "
                                           f"({str(exc).strip()})") from exc
                raise

    def _fetch(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        """The rows of one read. A connection the server ended since its last use (a
        restart) is found out only by using it: that read is tried once more on a new
        connection before the caller hears that the database is unreachable."""
        for attempt in (1, 2):
            try:
                with self._session() as db:
                    return db.execute(sql, args).fetchall()
            except StoreUnavailable:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read_generation(self, db: psycopg.Connection[tuple[Any, ...]]) -> int:
        row = db.execute("SELECT generation FROM sapd_sites WHERE site = %s",
                         (self.site,)).fetchone()
        return int(row[0]) if row else self.generation

    def _join(self) -> None:
        """This site's row: created at first use, its heartbeat and silence refreshed."""
        assert self._db is not None
        self._db.execute(
            "INSERT INTO sapd_sites (site, silent_after) VALUES (%s, %s) ON CONFLICT (site) "
            "DO UPDATE SET silent_after = EXCLUDED.silent_after, heartbeat = now()",
            (self.site, self.silent_after))
        self.generation = self._read_generation(self._db)
        self._joined = True

    # -- schema ----------------------------------------------------------------------------
    def migrate(self) -> int:
        """Bring the schema up to date; returns the steps applied."""
        with self._session() as db:
            return migrate_schema(db)

    # -- writes (the store process) ----------------------------------------------------------
    # A write that changes what searches find takes the site's next change number
    # (sapd_sites.content) first, and its rows (and sapd_removed's, for deletions) carry
    # it: one writer per site commits in order, so another site's follower that has seen
    # change N of a site has seen everything of it up to N (see changes_since).
    def apply(self, writes: Writes) -> Applied:
        """One batch in one transaction: deletes, upserts, refreshes, then this site's
        heartbeat (and a NOTIFY that other sites' followers hear). Only this site's rows
        are touched, so nothing is refused."""
        with self._session() as db, db.transaction():
            if writes.deletes or writes.upserts:
                change = self._bump(db, self.site)  # and the heartbeat
                if writes.deletes:
                    self._delete(db, writes.deletes, change)
                if writes.upserts:
                    self._upsert(db, writes.upserts.values(), change)
            else:
                self._beat(db)
            if writes.refreshes:
                self._refresh(db, [(sid, *values) for sid, values in writes.refreshes.items()])
        return Applied()

    def _bump(self, db: psycopg.Connection[tuple[Any, ...]], site: str) -> int:
        """The next change number of a site, and a NOTIFY sent when this commits; for
        this site, its heartbeat too (one round trip)."""
        ours = site == self.site
        row = db.execute(
            "WITH bumped AS (UPDATE sapd_sites SET content = content + 1, "
            "heartbeat = CASE WHEN %s THEN now() ELSE heartbeat END, "
            "skew = CASE WHEN %s THEN %s - extract(epoch FROM now())::double precision "
            "ELSE skew END WHERE site = %s RETURNING content) "
            "SELECT content, pg_notify(%s, %s) FROM bumped",
            (ours, ours, time.time(), site, NOTIFY_CHANNEL, site)).fetchone()
        return int(row[0]) if row else 0

    def _beat(self, db: psycopg.Connection[tuple[Any, ...]]) -> None:
        db.execute("UPDATE sapd_sites SET heartbeat = now(), "
                   "skew = %s - extract(epoch FROM now())::double precision "
                   "WHERE site = %s", (time.time(), self.site))

    def _temp_table(self, db: psycopg.Connection[tuple[Any, ...]], name: str,
                    columns: str) -> None:
        """A temporary table for COPY, made once per connection."""
        if name not in self._temp_tables:
            db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} {columns} "
                       "ON COMMIT DELETE ROWS")
            self._temp_tables.add(name)

    def _upsert(self, db: psycopg.Connection[tuple[Any, ...]],
                records: Iterable[SessionRecord], change: int) -> None:
        site, generation = self.site, self.generation
        self._temp_table(db, "sapd_incoming", "(LIKE sapd_sessions INCLUDING DEFAULTS)")
        with db.cursor() as cur, cur.copy(
                f"COPY sapd_incoming ({_COLUMN_LIST}) FROM STDIN") as copy:
            for r in records:
                copy.write_row(_row(r, site, generation))
        db.execute(f"INSERT INTO sapd_sessions ({_COLUMN_LIST}, change, first_change) "
                   f"SELECT {_COLUMN_LIST}, %s, %s FROM sapd_incoming ON CONFLICT (site, id) "
                   f"DO UPDATE SET {_UPDATE_LIST}, change = EXCLUDED.change",
                   (change, change))

    def _refresh(self, db: psycopg.Connection[tuple[Any, ...]],
                 seen: list[Liveness]) -> None:
        self._temp_table(db, "sapd_seen", "(id text, last_seen float8, expires float8, "
                         "period float8, msg_hash integer)")
        with db.cursor() as cur, cur.copy("COPY sapd_seen FROM STDIN") as copy:
            for row in seen:
                copy.write_row(row)
        db.execute("UPDATE sapd_sessions s SET last_seen = j.last_seen, expires = j.expires, "
                   "period = j.period, msg_hash = j.msg_hash, heard_gen = %s FROM sapd_seen j "
                   "WHERE s.site = %s AND s.id = j.id", (self.generation, self.site))

    def _delete(self, db: psycopg.Connection[tuple[Any, ...]], ids: Iterable[str],
                change: int, kind: str = "deleted") -> int:
        cur = db.execute(
            "WITH gone AS (DELETE FROM sapd_sessions WHERE site = %s AND id = ANY(%s) "
            "RETURNING site, id, name) INSERT INTO sapd_removed (site, change, id, kind, name) "
            "SELECT site, %s, id, %s, name FROM gone", (self.site, list(ids), change, kind))
        return cur.rowcount

    def upsert(self, records: Iterable[SessionRecord]) -> None:
        self.apply(Writes(upserts={r.id: r for r in records}))

    def refresh(self, seen: Iterable[Liveness]) -> None:
        self.apply(Writes(refreshes={sid: (last_seen, expires, period, msg_hash)
                                     for sid, last_seen, expires, period, msg_hash in seen}))

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        if not ids:
            return 0
        with self._session() as db, db.transaction():
            return self._delete(db, ids, self._bump(db, self.site))

    def expire(self, now: float) -> list[SessionRecord]:
        """Remove and return this site's sessions whose expiry time has passed."""
        with self._session() as db, db.transaction():
            rows = db.execute(f"SELECT {_READ}{_FROM} WHERE s.site = %s AND s.expires <= %s",
                              (self.site, now)).fetchall()
            records = [_record(row) for row in rows]
            if records:
                self._delete(db, [r.id for r in records], self._bump(db, self.site),
                             "expired")
        return records

    def heartbeat(self) -> None:
        """This site is alive (the database dates it): between writes, every second."""
        with self._session() as db:
            self._beat(db)

    def sweep(self) -> int:
        """Delete the expired rows of silent sites; a no-op while another site sweeps.
        A row's expiry is in its owner's wall time: moved onto the database's clock by
        the skew the owner's last heartbeat measured. Removals older than REMOVED_KEPT
        seconds are forgotten (a follower further behind than that resynchronises)."""
        with self._session() as db, db.transaction():
            locked = db.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                (SWEEP_LOCK,)).fetchone()
            if not locked or not locked[0]:
                return 0
            if time.monotonic() >= self._prune_at:
                self._prune_at = time.monotonic() + PRUNE_EVERY
                db.execute("DELETE FROM sapd_removed WHERE at < now() - "
                           "make_interval(secs => %s)", (REMOVED_KEPT,))
            silent = db.execute("SELECT site FROM sapd_sites t WHERE site <> %s AND "
                                f"{_SILENT}", (self.site,)).fetchall()
            swept = 0
            for (site,) in silent:  # each by the index on (site, expires)
                due = ("t.site = s.site AND s.site = %s AND s.expires <= "
                       "extract(epoch FROM now())::double precision + t.skew")
                if db.execute("SELECT EXISTS (SELECT 1 FROM sapd_sessions s JOIN sapd_sites "
                              f"t ON {due})", (site,)).fetchone() != (True,):
                    continue
                cur = db.execute(
                    f"WITH gone AS (DELETE FROM sapd_sessions s USING sapd_sites t WHERE {due} "
                    "RETURNING s.site, s.id, s.name) "
                    "INSERT INTO sapd_removed (site, change, id, kind, name) "
                    "SELECT site, %s, id, 'expired', name FROM gone",
                    (site, self._bump(db, site)))
                swept += cur.rowcount
            return swept

    # -- other sites' changes (the follower, sapd.store.campus) -------------------------------
    def listen(self) -> None:
        """Be told (NOTIFY) when another site commits a change."""
        with self._session() as db:
            db.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Until a site commits a change (True) or ``timeout`` passes (False)."""
        with self._session() as db:
            return any(True for _ in db.notifies(timeout=timeout, stop_after=1))

    def watermarks(self) -> dict[str, int]:
        """Each site's latest change number: where following starts."""
        return {site: int(content) for site, content in
                self._fetch("SELECT site, content FROM sapd_sites")}

    def changes_since(self, seen: dict[str, int]) -> tuple[dict[str, int], list[Change]]:
        """Other sites' writes after the change numbers in ``seen`` (a site not in it:
        all of its rows), as (kind, record) with kind new, changed, deleted or expired
        (a removed row as a record of its id, name and site only), read in one snapshot;
        and the change numbers to follow from next."""
        changes: list[Change] = []
        after = dict(seen)
        with self._session() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for site, content in db.execute("SELECT site, content FROM sapd_sites "
                                            "WHERE site <> %s", (self.site,)).fetchall():
                last = seen.get(site, 0)
                if content <= last:
                    continue
                # in commit order: a session removed, then heard again, ends present
                # (a batch's deletions go before its upserts, so they sort first)
                ordered: list[tuple[int, int, Change]] = []
                for row in db.execute(f"SELECT {_LIGHT_READ}, s.first_change, s.change"
                                      f"{_FROM} WHERE s.site = %s AND s.change > %s",
                                      (site, last)).fetchall():
                    ordered.append((int(row[-1]), 1, ("new" if row[-2] > last else "changed",
                                                      _record(row[:-2]))))
                for sid, kind, name, change in db.execute(
                        "SELECT id, kind, name, change FROM sapd_removed WHERE site = %s AND "
                        "change > %s", (site, last)).fetchall():
                    ordered.append((int(change), 0, (kind, _removed(site, sid, name))))
                ordered.sort(key=lambda item: item[:2])
                changes += [change for _, _, change in ordered]
                after[site] = int(content)
        return after, changes

    def mark_remote_stale(self) -> int:
        """At start-up: this site's heard sessions are stale until heard again (a new
        generation); other sites' rows are theirs."""
        with self._session() as db, db.transaction():
            db.execute("UPDATE sapd_sites SET generation = generation + 1, "
                       "heartbeat = now() WHERE site = %s", (self.site,))
            self._bump(db, self.site)  # staleness changes what searches find
            self.generation = self._read_generation(db)
            row = db.execute("SELECT count(*) FROM sapd_sessions WHERE site = %s "
                             "AND NOT local", (self.site,)).fetchone()
            return int(row[0]) if row else 0

    def content_version(self) -> int:
        ((version,),) = self._fetch("SELECT coalesce(sum(content), 0) + count(*) "
                                    "FROM sapd_sites")
        return int(version)

    # -- reads ----------------------------------------------------------------------------
    def get(self, session_id: str) -> SessionRecord | None:
        """This site's session of that id, else another site's (the first by name)."""
        if "\x00" in session_id:  # no id holds one, and PostgreSQL refuses to compare it
            return None
        rows = self._fetch(f"SELECT {_READ}{_FROM} WHERE s.id = %s "
                           "ORDER BY s.site <> %s, s.site LIMIT 1", (session_id, self.site))
        return _record(rows[0]) if rows else None

    def _where(self, query: SearchQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if query.group:
            clauses.append(
                "(s.site, s.id) IN (SELECT site, id FROM sapd_sessions WHERE groups @> "
                "ARRAY[%s]::text[] UNION ALL SELECT site, id FROM sapd_sessions WHERE "
                "has_range AND EXISTS (SELECT 1 FROM unnest(groups) g WHERE strpos(g, '-') > 0 "
                "AND sapd_inet(split_part(g, '-', 1)) <= sapd_inet(%s) AND sapd_inet(%s) <= "
                "sapd_inet(split_part(g, '-', 2))))")
            args += [query.group, query.group, query.group]
        for column, value in (("origin_address", query.origin), ("source", query.source),
                              ("scope", query.scope), ("site", query.site)):
            if value is not None:
                clauses.append(f"s.{column} = %s")
                args.append(value)
        if query.text:
            clauses.append("strpos(s.haystack, %s) > 0")
            args.append(query.text.lower())
        if query.attribute:
            if query.attribute_value is not None:
                clauses.append("s.attributes @> "
                               "jsonb_build_array(jsonb_build_array(%s::text, %s::text))")
                args += [query.attribute, query.attribute_value]
            else:
                clauses.append("EXISTS (SELECT 1 FROM jsonb_array_elements(s.attributes) a "
                               "WHERE a->>0 = %s)")
                args.append(query.attribute)
        if query.clock is not None:
            clauses.append("EXISTS (SELECT 1 FROM jsonb_array_elements(s.attributes) a "
                           "WHERE a->>0 = 'ts-refclk' AND strpos(lower(a->>1), %s) > 0)")
            args.append(query.clock.lower())
        if query.redundant is not None:
            clauses.append(("" if query.redundant else "NOT ") +
                           "EXISTS (SELECT 1 FROM jsonb_array_elements(s.attributes) a "
                           "WHERE a->>0 = 'group' AND upper(substr(a->>1, 1, 4)) = 'DUP ')")
        if query.media:
            clauses.append("strpos(' ' || s.media_types || ' ', %s) > 0")
            args.append(f" {query.media} ")
        if query.local is not None:
            clauses.append("s.local = %s")
            args.append(query.local)
        if query.stale is not None:
            clauses.append(_STALE if query.stale else f"NOT {_STALE}")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def search(self, query: SearchQuery, light: bool = False) -> list[SessionRecord]:
        where, args = self._where(query)
        rows = self._fetch(f"SELECT {_LIGHT_READ if light else _READ}{_FROM}{where}"
                           f"{_ORDER} LIMIT %s OFFSET %s", [*args, query.limit, query.offset])
        return [_record(row) for row in rows]

    def count(self, query: SearchQuery | None = None, cap: int | None = None) -> int:
        where, args = self._where(query or SearchQuery())
        inner = f"SELECT 1{_FROM}{where}" + (f" LIMIT {int(cap) + 1}" if cap else "")
        ((found,),) = self._fetch(f"SELECT count(*) FROM ({inner}) AS matching", args)
        return int(found)

    def iter_all(self, light: bool = False, own: bool = False) -> Iterator[SessionRecord]:
        where = " WHERE s.site = %s" if own else ""
        rows = self._fetch(f"SELECT {_ENGINE_READ if light else _READ}{_FROM}{where}",
                           [self.site] if own else [])
        yield from (_record(row) for row in rows)

    def shared_group_sessions(self, limit: int) -> list[SessionRecord]:
        """Sessions on a group that another row uses too (of any site)."""
        rows = self._fetch(
            f"SELECT {_READ}{_FROM} WHERE s.groups && (SELECT coalesce(array_agg(g), "
            "'{}') FROM (SELECT unnest(groups) AS g FROM sapd_sessions GROUP BY 1 "
            "HAVING count(*) > 1) AS shared) LIMIT %s", (limit,))
        return [_record(row).with_changes(attributes=()) for row in rows]

    def sites(self) -> list[dict[str, Any]]:
        """Every site of the directory: its sessions, last heartbeat age, silence."""
        rows = self._fetch(
            "SELECT t.site, extract(epoch FROM now() - t.heartbeat)::double precision, "
            f"{_SILENT}, (SELECT count(*) FROM sapd_sessions s WHERE s.site = t.site) "
            "FROM sapd_sites t ORDER BY t.site")
        return [{"site": site, "heartbeat_age": round(age, 3), "silent": silent,
                 "sessions": count} for site, age, silent, count in rows]

    def close(self) -> None:
        with self._lock:
            self._drop()


def _schema_version(db: psycopg.Connection[tuple[Any, ...]]) -> int:
    exists = db.execute("SELECT to_regclass('sapd_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = db.execute("SELECT max(version) FROM sapd_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate_schema(db: psycopg.Connection[tuple[Any, ...]]) -> int:
    """Bring the schema up to date in one transaction (several sapd starting at once take
    turns on an advisory lock); returns the steps applied."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP_LOCK - 1,))
        current = _schema_version(db)
        if current > SCHEMA_VERSION:
            raise SchemaError(f"the directory schema is version {current}, newer than "
                              f"this sapd understands ({SCHEMA_VERSION})")
        if current == 0:
            db.execute("CREATE TABLE IF NOT EXISTS sapd_schema (version integer NOT NULL)")
            db.execute("INSERT INTO sapd_schema VALUES (0)")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            db.execute(_MIGRATIONS[version].encode())
            db.execute("UPDATE sapd_schema SET version = %s", (version,))
        return SCHEMA_VERSION - current


def schema_status(dsn: str, password_file: str | None, apply: bool) -> tuple[int, int]:
    """(version found, version now) of the directory schema at ``dsn``; migrated only
    with ``apply``. For ``sapd --migrate``."""
    try:
        with psycopg.connect(conninfo(dsn, password_file), autocommit=True) as db:
            found = _schema_version(db)
            if apply:
                migrate_schema(db)
                return found, SCHEMA_VERSION
            return found, found
    except psycopg.Error as exc:
        raise StoreUnusable(f"PostgreSQL directory: {str(exc).strip()}") from None
