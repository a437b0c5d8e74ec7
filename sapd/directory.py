"""The session directory: a small backend interface and its embedded SQLite backend.

The interface is deliberately narrow (upsert, refresh, delete, expire, get, search,
count, iterate) so that a PostgreSQL or LDAP backend can implement it without
touching protocol code. SQLite runs in WAL mode; writes are grouped into
transactions by the caller (see :meth:`SqliteDirectory.transaction`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

SCHEMA_VERSION = 1
SPARSE_LIMIT = 300  # a filter matching fewer rows is read through its index


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One announcement as stored: identity, current version, where it came from."""

    id: str
    source: str  # SAP originating source
    identity: str  # o= without the version
    version: int
    msg_hash: int
    origin_address: str
    name: str
    info: str | None
    sdp: str
    scope: str
    sap_group: str
    first_seen: float
    last_seen: float
    local: bool = False
    owner_uid: int | None = None
    auth_tag: str = ""
    acl: dict[str, Any] = field(default_factory=dict)
    blob: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    period: float | None = None
    expires: float | None = None
    stale: bool = False
    groups: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()

    def with_changes(self, **changes: Any) -> SessionRecord:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "info": self.info, "identity": self.identity,
            "version": self.version, "source": self.source, "msg_hash": self.msg_hash,
            "origin_address": self.origin_address, "scope": self.scope,
            "sap_group": self.sap_group, "groups": list(self.groups),
            "media": list(self.media_types), "local": self.local, "stale": self.stale,
            "owner_uid": self.owner_uid, "acl": self.acl, "blob": self.blob,
            "options": self.options, "authenticated": bool(self.auth_tag),
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "period": self.period, "expires": self.expires,
        }


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Filters are ANDed; None means 'any'. ``text`` matches name or info, substring,
    case-insensitive."""

    text: str | None = None
    media: str | None = None
    group: str | None = None
    origin: str | None = None
    source: str | None = None
    scope: str | None = None
    attribute: str | None = None
    attribute_value: str | None = None
    local: bool | None = None
    stale: bool | None = None
    limit: int = 100
    offset: int = 0


class DirectoryBackend(Protocol):
    def upsert(self, records: Iterable[SessionRecord]) -> None: ...
    def refresh(self, seen: Iterable[tuple[str, float, float | None, float | None]]) -> None: ...
    def delete(self, ids: Iterable[str]) -> int: ...
    def expire(self, now: float) -> list[SessionRecord]: ...
    def get(self, session_id: str) -> SessionRecord | None: ...
    def search(self, query: SearchQuery) -> list[SessionRecord]: ...
    def count(self, query: SearchQuery | None = None, cap: int | None = None) -> int: ...
    def iter_all(self) -> Iterator[SessionRecord]: ...
    def mark_remote_stale(self) -> int: ...
    def close(self) -> None: ...


_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE sessions (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        identity TEXT NOT NULL,
        auth_tag TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL,
        msg_hash INTEGER NOT NULL,
        origin_address TEXT NOT NULL,
        name TEXT NOT NULL,
        info TEXT,
        sdp TEXT NOT NULL,
        scope TEXT NOT NULL,
        sap_group TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        local INTEGER NOT NULL DEFAULT 0,
        owner_uid INTEGER,
        acl TEXT NOT NULL DEFAULT '{}',
        blob TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}',
        period REAL,
        expires REAL,
        stale INTEGER NOT NULL DEFAULT 0,
        groups TEXT NOT NULL DEFAULT '',
        media_types TEXT NOT NULL DEFAULT '',
        haystack TEXT NOT NULL DEFAULT ''  -- lower(name, info): substring search
    );
    -- covering the filters that walk it, so non-matching rows are never fetched
    CREATE INDEX sessions_name ON sessions(name COLLATE NOCASE, id, haystack, media_types,
                                           scope, local, stale);
    CREATE INDEX sessions_source ON sessions(source);
    CREATE INDEX sessions_origin ON sessions(origin_address);
    CREATE INDEX sessions_scope ON sessions(scope);
    CREATE INDEX sessions_expires ON sessions(expires) WHERE expires IS NOT NULL;
    CREATE TABLE session_groups (rid INTEGER NOT NULL, address TEXT NOT NULL);
    CREATE INDEX session_groups_address ON session_groups(address, rid);
    CREATE INDEX session_groups_rid ON session_groups(rid);
    CREATE TABLE session_media (rid INTEGER NOT NULL, media TEXT NOT NULL);
    CREATE INDEX session_media_media ON session_media(media, rid);
    CREATE INDEX session_media_rid ON session_media(rid);
    CREATE TABLE session_attrs (rid INTEGER NOT NULL, name TEXT NOT NULL, value TEXT);
    CREATE INDEX session_attrs_name ON session_attrs(name, value, rid);
    CREATE INDEX session_attrs_rid ON session_attrs(rid, name, value);
    CREATE VIRTUAL TABLE session_text USING fts5(name, info, tokenize='trigram');
    """,
}

_COLUMNS = ("id, source, identity, auth_tag, version, msg_hash, origin_address, name, info, "
            "sdp, scope, sap_group, first_seen, last_seen, local, owner_uid, acl, blob, "
            "options, period, expires, stale, groups, media_types, haystack")


class SchemaError(RuntimeError):
    """The database file was written by a newer sapd."""


class SqliteDirectory:
    """The embedded directory backend: one SQLite file, WAL mode."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._depth = 0
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._migrate()

    def _migrate(self) -> None:
        current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: schema version {current} is newer than "
                              f"this sapd understands ({SCHEMA_VERSION})")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            # executescript commits first, so each step is its own explicit transaction
            self._db.executescript(f"BEGIN IMMEDIATE;{_MIGRATIONS[version]}"
                                   f"PRAGMA user_version={version};COMMIT;")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit; nests (inner blocks join the outer one)."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    # -- writes ---------------------------------------------------------------
    def upsert(self, records: Iterable[SessionRecord]) -> None:
        db = self._db
        with self.transaction():
            for r in records:
                row = (r.id, r.source, r.identity, r.auth_tag, r.version, r.msg_hash,
                       r.origin_address, r.name, r.info, r.sdp, r.scope, r.sap_group,
                       r.first_seen, r.last_seen, int(r.local), r.owner_uid,
                       json.dumps(r.acl), json.dumps(r.blob), json.dumps(r.options),
                       r.period, r.expires, int(r.stale), " ".join(r.groups),
                       " ".join(r.media_types), f"{r.name}\n{r.info or ''}".lower())
                found = db.execute("SELECT rid FROM sessions WHERE id=?", (r.id,)).fetchone()
                if found:
                    rid = int(found[0])
                    db.execute(f"UPDATE sessions SET ({_COLUMNS}) = ({','.join('?' * 25)}) "
                               "WHERE rid=?", (*row, rid))
                    self._delete_children(rid)
                else:
                    cur = db.execute(f"INSERT INTO sessions ({_COLUMNS}) "
                                     f"VALUES ({','.join('?' * 25)})", row)
                    rid = int(cur.lastrowid or 0)
                db.executemany("INSERT INTO session_groups VALUES (?, ?)",
                               [(rid, g) for g in r.groups])
                db.executemany("INSERT INTO session_media VALUES (?, ?)",
                               [(rid, m) for m in set(r.media_types)])
                db.executemany("INSERT INTO session_attrs VALUES (?, ?, ?)",
                               [(rid, n, v) for n, v in r.attributes])
                db.execute("INSERT INTO session_text(rowid, name, info) VALUES (?, ?, ?)",
                           (rid, r.name, r.info or ""))

    def _delete_children(self, rid: int) -> None:
        for table in ("session_groups", "session_media", "session_attrs"):
            self._db.execute(f"DELETE FROM {table} WHERE rid=?", (rid,))
        self._db.execute("DELETE FROM session_text WHERE rowid=?", (rid,))

    def refresh(self, seen: Iterable[tuple[str, float, float | None, float | None]]) -> None:
        """Batched liveness update: (id, last_seen, expires, period); clears stale."""
        with self.transaction():
            self._db.executemany(
                "UPDATE sessions SET last_seen=?, expires=?, period=?, stale=0 WHERE id=?",
                [(last, expires, period, sid) for sid, last, expires, period in seen])

    def delete(self, ids: Iterable[str]) -> int:
        deleted = 0
        with self.transaction():
            for sid in ids:
                found = self._db.execute("SELECT rid FROM sessions WHERE id=?",
                                         (sid,)).fetchone()
                if found:
                    self._delete_children(int(found[0]))
                    self._db.execute("DELETE FROM sessions WHERE rid=?", (found[0],))
                    deleted += 1
        return deleted

    def expire(self, now: float) -> list[SessionRecord]:
        """Remove and return every session whose expiry time has passed."""
        with self.transaction():
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, rid FROM sessions WHERE expires IS NOT NULL "
                "AND expires <= ?", (now,)).fetchall()
            records = self._records(rows)
            self.delete(r.id for r in records)
        return records

    def mark_remote_stale(self) -> int:
        """At start-up: every remote session is stale until heard again."""
        with self.transaction():
            cur = self._db.execute("UPDATE sessions SET stale=1 WHERE local=0")
        return cur.rowcount

    # -- reads ----------------------------------------------------------------
    def _record(self, row: tuple[Any, ...],
                attrs: list[tuple[str, str | None]]) -> SessionRecord:
        return SessionRecord(
            id=row[0], source=row[1], identity=row[2], auth_tag=row[3], version=row[4],
            msg_hash=row[5], origin_address=row[6], name=row[7], info=row[8], sdp=row[9],
            scope=row[10], sap_group=row[11], first_seen=row[12], last_seen=row[13],
            local=bool(row[14]), owner_uid=row[15], acl=json.loads(row[16]),
            blob=json.loads(row[17]), options=json.loads(row[18]), period=row[19],
            expires=row[20], stale=bool(row[21]),
            groups=tuple(row[22].split()), media_types=tuple(row[23].split()),
            attributes=tuple((n, v) for n, v in attrs))

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS}, rid FROM sessions WHERE id=?",
                                   (session_id,)).fetchone()
            return self._records([row])[0] if row else None

    def _sparse(self, sql: str, args: list[Any]) -> bool:
        """Does a candidate set hold few rows? Probed with a LIMIT, so it stays cheap."""
        probe = f"SELECT count(*) FROM ({sql} LIMIT {SPARSE_LIMIT})"
        return int(self._db.execute(probe, args).fetchone()[0]) < SPARSE_LIMIT

    def _where(self, query: SearchQuery) -> tuple[str, list[Any]]:
        """Build the WHERE clause. Sparse filters use their index (an IN set the planner
        reads by rowid, then sorts a few rows); dense ones are written so that no index
        applies, and SQLite walks the name index, stopping at LIMIT."""
        clauses: list[str] = []
        args: list[Any] = []
        if query.group:
            clauses.append("rid IN (SELECT rid FROM session_groups WHERE address=?)")
            args.append(query.group)
        for column, value in (("origin_address", query.origin), ("source", query.source)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        if query.text:
            phrase = '"' + query.text.replace('"', '""') + '"'
            fts = "SELECT rowid FROM session_text WHERE session_text MATCH ?"
            if len(query.text) >= 3 and self._sparse(fts, [phrase]):
                clauses.append(f"rid IN ({fts})")
                args.append(phrase)
            else:
                clauses.append("instr(haystack, ?) > 0")
                args.append(query.text.lower())
        if query.attribute:
            attr_sql = "SELECT rid FROM session_attrs WHERE name=?"
            attr_args: list[Any] = [query.attribute]
            if query.attribute_value is not None:
                attr_sql += " AND value=?"
                attr_args.append(query.attribute_value)
            if self._sparse(attr_sql, attr_args):
                clauses.append(f"rid IN ({attr_sql})")
            else:
                correlated = attr_sql.replace("WHERE", "WHERE rid=sessions.rid AND", 1)
                clauses.append(f"EXISTS ({correlated})")
            args += attr_args
        if query.media:
            clauses.append("instr(' ' || media_types || ' ', ?) > 0")
            args.append(f" {query.media} ")
        if query.scope is not None:
            clauses.append("+scope=?")  # unary + keeps the planner on the name index
            args.append(query.scope)
        for column, flag in (("local", query.local), ("stale", query.stale)):
            if flag is not None:
                clauses.append(f"+{column}=?")
                args.append(int(flag))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _records(self, rows: list[tuple[Any, ...]]) -> list[SessionRecord]:
        """Rows to records, loading every row's attributes in one query."""
        attrs: dict[int, list[tuple[str, str | None]]] = {}
        rids = [row[25] for row in rows]
        for start in range(0, len(rids), 500):
            chunk = rids[start:start + 500]
            for rid, name, value in self._db.execute(
                    f"SELECT rid, name, value FROM session_attrs WHERE rid IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                attrs.setdefault(rid, []).append((name, value))
        return [self._record(row, attrs.get(row[25], [])) for row in rows]

    def search(self, query: SearchQuery) -> list[SessionRecord]:
        with self._lock:
            where, args = self._where(query)
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, rid FROM sessions{where} "
                "ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?",
                [*args, query.limit, query.offset]).fetchall()
            return self._records(rows)

    def count(self, query: SearchQuery | None = None, cap: int | None = None) -> int:
        """Matching sessions; with ``cap``, counting stops at cap + 1 (cheap 'more than')."""
        with self._lock:
            where, args = self._where(query or SearchQuery())
            inner = f"SELECT 1 FROM sessions{where}" + (f" LIMIT {cap + 1}" if cap else "")
            return int(self._db.execute(f"SELECT count(*) FROM ({inner})",
                                        args).fetchone()[0])

    def iter_all(self) -> Iterator[SessionRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS}, rid FROM sessions").fetchall()
            records = self._records(rows)
        yield from records

    def close(self) -> None:
        with self._lock:
            self._db.close()
