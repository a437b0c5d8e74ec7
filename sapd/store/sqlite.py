"""The session directory: a small backend interface and its embedded SQLite backend.

The interface is deliberately narrow (upsert, refresh, delete, expire, get, search,
count, iterate) so that a PostgreSQL or LDAP backend can implement it without
touching protocol code. SQLite runs in WAL mode; writes are grouped into
transactions by the caller (see :meth:`SqliteDirectory.transaction`).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import re
import sqlite3
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sapd.plumbing import groupranges
from sapd.plumbing.errors import StoreUnusable
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
    shared_object,
)

SCHEMA_VERSION = 9
SPARSE_LIMIT = 300  # a filter matching fewer rows is read through its index
TRIGRAM_PROBE = 2000  # postings read per trigram to rank a search text's trigrams
TRIGRAMS_PROBED = 8  # at most this many trigrams of a long search text are probed
WALK_WINDOW = 5000  # name-index rows a common text's page is first looked for in
COUNT_WINDOW = 20000  # and its capped count
MATCH_MEMO = 1000  # matches of a text search remembered for its count and next pages
PLAN_TTL = 10.0  # seconds a text search plan is reused (plans only affect speed)


def _fts_phrase(text: str) -> str:
    """Text as one FTS5 phrase: matched as a substring by the trigram tokenizer."""
    return '"' + text.replace('"', '""') + '"'


def _trigrams(needle: str) -> list[str]:
    """The distinct trigrams of a lower-cased search text, at most TRIGRAMS_PROBED of
    them spread along it. Only ASCII ones: there Python's lower() and the tokenizer's
    case folding agree, so every row containing the text holds each of them."""
    grams = [g for g in dict.fromkeys(needle[i:i + 3] for i in range(len(needle) - 2))
             if g.isascii()]
    if len(grams) > TRIGRAMS_PROBED:
        step = (len(grams) - 1) / (TRIGRAMS_PROBED - 1)
        grams = [grams[round(i * step)] for i in range(TRIGRAMS_PROBED)]
    return grams


@dataclass(frozen=True, slots=True)
class _TextPlan:
    fts: str | None  # FTS5 query for a superset of the rows holding the text
    common: bool  # every trigram is common: a page is likely near the start of the index


def _memo_key(query: SearchQuery) -> SearchQuery:
    """A text search's remembered matches serve all its pages."""
    return replace(query, limit=0, offset=0)


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
        heard_gen INTEGER NOT NULL DEFAULT 0,  -- daemon run that last heard it (stale)
        content_crc INTEGER NOT NULL DEFAULT 0,
        groups TEXT NOT NULL DEFAULT '',
        media_types TEXT NOT NULL DEFAULT '',
        haystack TEXT NOT NULL DEFAULT ''  -- lower(name, info): substring search
    );
    -- covering the filters that walk it, so non-matching rows are never fetched
    CREATE INDEX sessions_name ON sessions(name COLLATE NOCASE, id, haystack, media_types,
                                           scope, local);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('generation', 1);
    CREATE INDEX sessions_source ON sessions(source);
    CREATE INDEX sessions_origin ON sessions(origin_address);
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
    # The media filter reads sessions.media_types; this table was written, never read,
    # and cost ~10 % of every upsert.
    2: """
    DROP TABLE session_media;
    """,
    # Bumped by every write that can change which sessions a text search finds, so that
    # a reader on another connection (the daemon's) knows its remembered matches are old.
    3: """
    INSERT INTO meta VALUES ('content', 0);
    """,
    # Signature checks (sapd.trust): what was verified, and by whom.
    4: """
    ALTER TABLE sessions ADD COLUMN verification TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN signed_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN signer_key TEXT NOT NULL DEFAULT '';
    """,
    # o= versions are 1*DIGIT (VLC writes 20 digits, above 2**63): decimal text, read
    # back as Python ints and compared as numbers in code. The SAP header's source is
    # kept beside the sender's IP source; rows written before were keyed on it.
    5: """
    ALTER TABLE sessions RENAME COLUMN version TO version_number;
    ALTER TABLE sessions ADD COLUMN version TEXT NOT NULL DEFAULT '0';
    UPDATE sessions SET version = CAST(version_number AS TEXT);
    ALTER TABLE sessions DROP COLUMN version_number;
    ALTER TABLE sessions ADD COLUMN header_source TEXT NOT NULL DEFAULT '';
    ALTER TABLE sessions ADD COLUMN heard_via TEXT NOT NULL DEFAULT '';
    """,
    # The few group entries that are FIRST-LAST ranges, so that a group search reads them
    # and not every group row (a full scan cost ~5 ms a search at 100,000 sessions).
    6: """
    CREATE INDEX session_group_ranges ON session_groups(rid) WHERE instr(address, '-') > 0;
    """,
    # heard_via entries name how they were heard ("sap" or "ravenna"): a stream heard
    # both ways is one row with one entry each. Every entry before was SAP's.
    7: """
    UPDATE sessions SET heard_via = (
        SELECT json_group_array(json_array('sap', json_extract(value, '$[0]'),
                                           json_extract(value, '$[1]'),
                                           json_extract(value, '$[2]')))
        FROM json_each(sessions.heard_via))
    WHERE heard_via != '';
    """,
    # The site that heard it ([site]): one value in a file of one host, shown in listings
    # the same way as in a directory several sites share.
    8: """
    ALTER TABLE sessions ADD COLUMN site TEXT NOT NULL DEFAULT '';
    """,
    # What the session list shows of the attributes (codecs, clock, redundancy), written
    # with them: a page reads this column, not the SDP and its attribute rows (a page
    # of 100 at 100,000 sessions: 0.54 -> 0.43 ms). Existing rows get theirs from their
    # attribute rows, in the order they were written.
    9: """
    ALTER TABLE sessions ADD COLUMN listing TEXT NOT NULL DEFAULT '';
    UPDATE sessions SET listing = coalesce((
        SELECT sapd_listing(name, value) FROM (
            SELECT name, value FROM session_attrs WHERE rid = sessions.rid ORDER BY rowid)),
        '""" + listing_to_json(()) + """');
    """,
}

# The sessions table's columns, in one place: each with how a record's value is stored
# (an expression over the record ``r``, the run's ``generation``). A record field reads
# back from the column of its name unless _LOADS says otherwise (an expression over the
# columns, by name, and ``attrs``, ``generation``). A new column is a field of
# SessionRecord, a line here, and its migration above; every statement, the row
# builder and the record builder follow from this table.
_STORED: tuple[tuple[str, str], ...] = (
    ("id", "r.id"), ("source", "r.source"), ("identity", "r.identity"),
    ("auth_tag", "r.auth_tag"), ("version", "str(r.version)"), ("msg_hash", "r.msg_hash"),
    ("origin_address", "r.origin_address"), ("name", "r.name"), ("info", "r.info"),
    ("sdp", "r.sdp"), ("scope", "r.scope"), ("sap_group", "r.sap_group"),
    ("first_seen", "r.first_seen"), ("last_seen", "r.last_seen"), ("local", "int(r.local)"),
    ("owner_uid", "r.owner_uid"), ("acl", "object_to_json(r.acl)"),
    ("blob", "object_to_json(r.blob)"),
    ("options", "object_to_json(r.options)"), ("period", "r.period"), ("expires", "r.expires"),
    ("heard_gen", "0 if r.stale else generation"),  # the run that last heard it
    ("groups", "' '.join(r.groups)"), ("media_types", "' '.join(r.media_types)"),
    ("haystack", "f'{r.name}\\n{r.info or \"\"}'.lower()"),  # substring search
    ("content_crc", "r.content_crc or zlib.crc32(r.sdp.encode())"),
    ("verification", "r.verification"), ("signed_by", "r.signed_by"),
    ("signer_key", "r.signer_key"),
    ("header_source", "r.header_source"),  # '' when the same as source
    ("heard_via", "heard_via_to_json(r.heard_via)"), ("site", "r.site"),
    ("listing", "listing_to_json(r.attributes)"),  # what the session list shows of them
)
_LOADS = {
    "version": "int(version)", "heard_via": "heard_via_from_json(heard_via)",
    "local": "bool(local)", "acl": "object_from_json(acl)", "blob": "object_from_json(blob)",
    "options": "object_from_json(options)", "stale": "not local and heard_gen < generation",
    "groups": "tuple(groups.split())",
    "media_types": "shared_media_types(tuple(media_types.split()))",
    "attributes": "tuple(attrs)", "listing": "listing_from_json(listing)",
    # Few distinct values, one object each rather than one a row (~20 MB of the engine
    # at 100,000 sessions): scope names and SAP groups come from the scope table.
    "scope": "intern(scope)", "sap_group": "intern(sap_group)", "site": "intern(site)",
    "auth_tag": "intern(auth_tag)", "verification": "intern(verification)",
    "origin_address": "source if origin_address == source else origin_address",
}
# What a light read leaves out: the SDP text (and its attribute rows, not read). A list
# page shows the stored listing instead; the engine's start-up load needs neither.
_LIGHT = {"sdp": "''", "haystack": "''"}
_ENGINE = {**_LIGHT, "listing": "''"}
_NAMES = [name for name, _ in _STORED]
_COLUMNS = ", ".join(_NAMES)
_LIGHT_COLUMNS = ", ".join(_LIGHT.get(name, name) for name in _NAMES)
_ENGINE_COLUMNS = ", ".join(_ENGINE.get(name, name) for name in _NAMES)
_RID = len(_NAMES)  # reads select the row id after the columns
_GROUPS_AT = 1 + _NAMES.index("groups")  # in a row to write (the row id first)

_CHUNK_ROWS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)  # few statement shapes, all cached


@functools.cache
def _values_list(width: int, rows: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return "VALUES " + ",".join([row] * rows)


def _row_chunks(rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
    """Rows as ``VALUES (?,..),(?,..)`` lists of up to 1,024 rows (at most 27,648
    parameters for the widest table, under the 32,766 of SQLite 3.32 and later), with
    their flattened parameters."""
    start = 0
    for size in _CHUNK_ROWS:
        while len(rows) - start >= size:
            chunk = rows[start:start + size]
            yield _values_list(len(chunk[0]), size), list(itertools.chain.from_iterable(chunk))
            start += size


def _compile(source: str, name: str) -> Any:
    """A function from generated source: positional tuple and constructor calls, as fast
    as hand-written ones (keywords cost ~25 % more, and start-up builds 100,000 records)
    and derived from the column table, so they cannot fall out of its order."""
    scope: dict[str, Any] = {"SessionRecord": SessionRecord, "object_to_json": object_to_json,
                             "object_from_json": object_from_json, "zlib": zlib,
                             "heard_via_to_json": heard_via_to_json,
                             "heard_via_from_json": heard_via_from_json,
                             "listing_to_json": listing_to_json,
                             "listing_from_json": listing_from_json,
                             "shared_media_types": shared_media_types,
                             "intern": sys.intern, "shared_object": shared_object}
    exec(source, scope)
    return scope[name]


# The engine's load (iter_all light): what memory keeps, with one shared (read-only)
# empty dict for the usual empty acl, blob and options rather than three a session
# (~19 MB at 100,000 sessions), and no attributes or listing.
_ENGINE_LOADS = {**_LOADS, "acl": "shared_object(acl)", "blob": "shared_object(blob)",
                 "options": "shared_object(options)", "attributes": "()", "listing": "None"}


def _builders() -> tuple[Any, Any, Any]:
    missing = [f.name for f in fields(SessionRecord) if f.name not in _LOADS
               and f.name not in _NAMES]
    if missing:
        raise TypeError(f"SessionRecord fields without a column or a load: {missing}")
    to_row = _compile(
        "def to_row(r, rid, generation):\n"
        f"    return (rid, {', '.join(store for _, store in _STORED)})\n", "to_row")
    position = {name: f"row[{i}]" for i, name in enumerate(_NAMES)}

    def builder(loads: dict[str, str]) -> Any:
        values = ", ".join(re.sub(r"\b\w+\b", lambda m: position.get(m[0], m[0]),
                                  loads.get(f.name, f.name)) for f in fields(SessionRecord))
        return _compile("def to_record(row, attrs, generation):\n"
                        f"    return SessionRecord({values})\n", "to_record")
    return to_row, builder(_LOADS), builder(_ENGINE_LOADS)


_to_row, _to_record, _to_engine_record = _builders()


class SchemaError(StoreUnusable):
    """The database file was written by a newer sapd."""


def file_schema_version(path: Path) -> int:
    """The schema version of a directory file, read only (0: no file yet)."""
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreUnusable(f"{path}: not a usable database ({exc})") from None


def _range_covers(entry: str, address: str) -> bool:
    """SQL's view of groupranges: does a session's group entry hold this address?"""
    try:
        return groupranges.parse(entry).covers(ipaddress.ip_address(address))
    except ValueError:
        return False


class _ListingOf:
    """SQL aggregate over a session's attribute rows: their stored listing (schema 9)."""

    def __init__(self) -> None:
        self.attributes: list[tuple[str, str | None]] = []

    def step(self, name: str, value: str | None) -> None:
        self.attributes.append((name, value))

    def finalize(self) -> str:
        return listing_to_json(tuple(self.attributes))


class SqliteDirectory:
    """The embedded directory backend: one SQLite file, WAL mode."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Batched writes use ~100 statement shapes (see _row_chunks); keep them all prepared.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   cached_statements=512)
        self._db.create_function("sapd_range_covers", 2, _range_covers, deterministic=True)
        # typeshed types aggregates of one argument only
        self._db.create_aggregate("sapd_listing", 2, _ListingOf)  # type: ignore[arg-type]
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._migrate()
            self.generation = self._read_generation()
        except sqlite3.DatabaseError as exc:  # a corrupt or foreign file: say which one
            self._db.close()
            raise StoreUnusable(f"{self.path}: not a usable database ({exc}); move it "
                                "away to start with an empty directory") from None
        self._next_rid: int | None = None  # known on first write
        self._plans: dict[str, tuple[float, _TextPlan]] = {}  # text -> (until, plan)
        self._cutoffs: dict[int, tuple[float, str | None]] = {}  # rows -> (until, name)
        # text search without its page -> (content version, matching row ids in order)
        self._matches: dict[SearchQuery, tuple[int, list[int]]] = {}

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
                    self._roll_back()
                raise
            self._depth -= 1
            if self._depth == 0:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error:  # disk full at commit: leave no transaction open
                    self._roll_back()
                    raise

    def _roll_back(self) -> None:
        # SQLite may have rolled back already (disk full, I/O error): a ROLLBACK then
        # fails, and its error would hide the one that says what happened.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._next_rid = None  # row ids handed out in the rolled-back transaction

    # -- writes ---------------------------------------------------------------
    # A batch reaches SQLite as a few statements of many rows each (see _row_chunks), not
    # a statement per row: a 27-column row costs ~4 us that way and ~9 us through
    # executemany, whose every row is a step of its own. (When the store was a thread,
    # each step also gave up the interpreter lock and waited to get it back.)
    def apply(self, writes: Writes) -> Applied:
        """One batch's writes in one transaction, in the order that makes it equal to
        applying its parts. All or nothing: an error raises, nothing is refused."""
        with self.transaction():
            if writes.deletes:
                self.delete(writes.deletes)
            if writes.upserts:
                self.upsert(writes.upserts.values())
            if writes.refreshes:
                self.refresh((sid, *values) for sid, values in writes.refreshes.items())
        return Applied()

    def upsert(self, records: Iterable[SessionRecord]) -> None:
        """Insert or replace sessions. A replaced session's group, attribute and text rows
        are rewritten only where they changed: a new version mostly changes little, and
        those rows are most of a write (each attribute row is in two indexes, the text in
        the trigram index)."""
        records = list(records)
        if not records:
            return
        existing = self._existing([r.id for r in records])
        old_attrs = self._attributes_by_rid([(e[0],) for e in existing.values()])
        rows, groups, attrs, text = [], [], [], []
        stale_groups, stale_attrs, stale_text = [], [], []  # replaced rows' children to clear
        generation = self.generation
        for r in records:
            old = existing.get(r.id)
            rid = self._new_rid() if old is None else old[0]
            row = _to_row(r, rid, generation)
            rows.append(row)
            if old is None or row[_GROUPS_AT] != old[3]:
                if old is not None:
                    stale_groups.append((rid,))
                groups += [(rid, g) for g in r.groups]
                # a range's first address too: conflicts compare first addresses (a session
                # on 239.1.1.1 and one on 239.1.1.1-239.1.1.4 share it), and search finds it
                groups += [(rid, g.partition(groupranges.SEPARATOR)[0]) for g in r.groups
                           if groupranges.SEPARATOR in g]
            if old is None or Counter(r.attributes) != Counter(old_attrs.get(rid, ())):
                if old is not None:
                    stale_attrs.append((rid,))
                attrs += [(rid, n, v) for n, v in r.attributes]
            info = r.info or ""
            if old is None or r.name != old[1] or info != old[2]:
                if old is not None:
                    stale_text.append((rid,))
                text.append((rid, r.name, info))
        with self.transaction():
            self._content_changed()
            self._run_chunked("DELETE FROM session_groups WHERE rid IN ({})", stale_groups)
            self._run_chunked("DELETE FROM session_attrs WHERE rid IN ({})", stale_attrs)
            self._run_chunked("DELETE FROM session_text WHERE rowid IN ({})", stale_text)
            self._run_chunked(f"INSERT OR REPLACE INTO sessions (rid, {_COLUMNS}) {{}}", rows)
            self._run_chunked("INSERT INTO session_groups {}", groups)
            self._run_chunked("INSERT INTO session_attrs {}", attrs)
            self._run_chunked("INSERT INTO session_text(rowid, name, info) {}", text)

    def _existing(self, ids: list[str]) -> dict[str, tuple[int, str, str, str]]:
        """Of the sessions among ``ids`` that are stored: id -> (rid, name, info, groups),
        what decides which of their rows an upsert rewrites (one JSON value a chunk,
        as in _rids)."""
        found: dict[str, tuple[int, str, str, str]] = {}
        for values, parameters in _row_chunks([(i,) for i in ids]):
            got = self._db.execute(
                "SELECT json_group_object(id, json_array(rid, name, coalesce(info, ''), "
                f"groups)) FROM sessions WHERE id IN ({values})", parameters).fetchone()[0]
            found.update((k, tuple(v)) for k, v in json.loads(got).items())
        return found

    def _attributes_by_rid(self, rids: list[tuple[int]]
                           ) -> dict[int, list[tuple[str, str | None]]]:
        """The attribute rows of these sessions, read a chunk of rows at a time."""
        attrs: dict[int, list[tuple[str, str | None]]] = {}
        for values, chunk in _row_chunks(rids):
            for rid, name, value in self._db.execute(
                    f"SELECT rid, name, value FROM session_attrs WHERE rid IN ({values})",
                    chunk):
                attrs.setdefault(rid, []).append((name, value))
        return attrs

    def _clear_children(self, rids: list[tuple[int]]) -> None:
        for table, key in (("session_groups", "rid"), ("session_attrs", "rid"),
                           ("session_text", "rowid")):
            self._run_chunked(f"DELETE FROM {table} WHERE {key} IN ({{}})", rids)

    def _run_chunked(self, template: str, rows: list[tuple[Any, ...]]) -> None:
        """Run ``template`` with its ``{}`` replaced by a VALUES list of rows, a chunk at
        a time."""
        for values, parameters in _row_chunks(rows):
            self._db.execute(template.format(values), parameters)

    def refresh(self, seen: Iterable[Liveness]) -> None:
        """Batched liveness update; a session heard again is no longer stale."""
        with self.transaction():
            self._run_chunked(
                "UPDATE sessions SET last_seen=j.column2, expires=j.column3, "
                f"period=j.column4, msg_hash=j.column5, heard_gen={self.generation:d} "
                "FROM ({}) AS j WHERE sessions.id = j.column1", list(seen))

    def delete(self, ids: Iterable[str]) -> int:
        rids = [(rid,) for rid in self._rids(list(ids)).values()]
        if rids:
            with self.transaction():
                self._content_changed()
                self._clear_children(rids)
                self._run_chunked("DELETE FROM sessions WHERE rid IN ({})", rids)
        return len(rids)

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
        """At start-up: every remote session is stale until heard again. A new
        generation does it in O(1): stale means 'last heard in an older generation'."""
        with self.transaction():
            self._content_changed()
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key='generation'")
            self.generation = self._read_generation()
            return int(self._db.execute("SELECT count(*) FROM sessions WHERE local=0")
                       .fetchone()[0])

    def _rids(self, ids: list[str]) -> dict[str, int]:
        """Row ids of existing sessions, looked up per batch: an id -> rid map held in
        memory would cost ~10 MB at 100,000 sessions. Aggregated into one JSON value, so
        a lookup is one step per chunk, not one per row found (see upsert)."""
        found: dict[str, int] = {}
        for values, parameters in _row_chunks([(i,) for i in ids]):
            got = self._db.execute("SELECT json_group_object(id, rid) FROM sessions "
                                   f"WHERE id IN ({values})", parameters).fetchone()[0]
            found.update(json.loads(got))
        return found

    def _new_rid(self) -> int:
        """Row ids are handed out in order: appends to the B-trees, not random inserts."""
        if self._next_rid is None:
            self._next_rid = int(self._db.execute(
                "SELECT coalesce(max(rid), 0) + 1 FROM sessions").fetchone()[0])
        rid = self._next_rid
        self._next_rid += 1
        return rid

    def _content_changed(self) -> None:
        """Inside a write transaction that can change which sessions a text search finds
        (liveness refreshes cannot, and they arrive all the time)."""
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key='content'")

    def content_version(self) -> int:
        """Read before the rows it vouches for: a commit in between then only makes the
        remembered matches look older than they are."""
        return int(self._db.execute("SELECT value FROM meta WHERE key='content'")
                   .fetchone()[0])

    def _read_generation(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='generation'")
                   .fetchone()[0])

    # -- reads ----------------------------------------------------------------
    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS}, rid FROM sessions WHERE id=?",
                                   (session_id,)).fetchone()
            return self._records([row])[0] if row else None

    def _sparse(self, sql: str, args: list[Any]) -> bool:
        """Does a candidate set hold few rows? Probed with a LIMIT, so it stays cheap."""
        probe = f"SELECT count(*) FROM ({sql} LIMIT {SPARSE_LIMIT})"
        return int(self._db.execute(probe, args).fetchone()[0]) < SPARSE_LIMIT

    def _text_plan(self, needle: str) -> _TextPlan:
        """How to find rows containing ``needle``. Plans are cached briefly and only
        decide speed, never results: the substring itself is always checked."""
        now = time.monotonic()
        cached = self._plans.get(needle)
        if cached is not None and cached[0] > now:
            return cached[1]
        plan = self._make_text_plan(needle)
        if len(self._plans) >= 256:
            self._plans.clear()
        self._plans[needle] = (now + PLAN_TTL, plan)
        return plan

    def _make_text_plan(self, needle: str) -> _TextPlan:
        """Rank the text's trigrams by how many rows hold them (probed with a LIMIT, so
        common ones cost the same as rare ones; ties go to trigrams with digits, which
        tell names apart). Two trigrams ANDed skip through long posting lists cheaply,
        where the phrase of all of them read every position (~12 ms for a 1 % match)."""
        grams = _trigrams(needle)
        if not grams:
            return _TextPlan(None, common=True)
        probe = (f"SELECT count(*) FROM (SELECT rowid FROM session_text "
                 f"WHERE session_text MATCH ? LIMIT {TRIGRAM_PROBE})")
        ranked = sorted((int(self._db.execute(probe, [_fts_phrase(g)]).fetchone()[0]),
                         -sum(c.isdigit() for c in g), -i, g) for i, g in enumerate(grams))
        fts = " AND ".join(_fts_phrase(g) for *_, g in ranked[:2])
        return _TextPlan(fts, common=ranked[0][0] >= TRIGRAM_PROBE)

    def _walk_window(self, query: SearchQuery) -> bool:
        """Try a bounded walk of the name index first? Only for a common text whose other
        filters the index covers (a match in the window is then a match in name order)."""
        if not query.text or query.group is not None or query.origin is not None or \
                query.source is not None or query.attribute is not None or \
                query.stale is not None or query.clock is not None or \
                query.site is not None or \
                query.redundant is not None:
            return False
        return self._text_plan(query.text.lower()).common

    def _learn_rare(self, text: str) -> None:
        """A bounded walk came up short: the text is rarer than its trigrams."""
        needle = text.lower()
        cached = self._plans.get(needle)
        if cached is not None:
            self._plans[needle] = (cached[0], replace(cached[1], common=False))

    def _where(self, query: SearchQuery, walk: bool = False) -> tuple[str, list[Any]]:
        """Build the WHERE clause. Sparse filters use their index (an IN set the planner
        reads by rowid, then sorts a few rows); dense ones are written so that no index
        applies, and SQLite walks the name index, stopping at LIMIT."""
        clauses: list[str] = []
        args: list[Any] = []
        if query.group:
            # an address, or inside a FIRST-LAST range (few rows hold a '-'; the
            # address index answers the rest)
            clauses.append("rid IN (SELECT rid FROM session_groups WHERE address=? UNION "
                           "SELECT rid FROM session_groups WHERE instr(address, '-') > 0 "
                           "AND sapd_range_covers(address, ?))")
            args += [query.group, query.group]
        for column, value in (("origin_address", query.origin), ("source", query.source)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        if query.text:
            needle = query.text.lower()
            candidates = None if walk else self._text_plan(needle).fts
            if candidates is not None:
                clauses.append("rid IN (SELECT rowid FROM session_text "
                               "WHERE session_text MATCH ?)")
                args.append(candidates)
            clauses.append("instr(haystack, ?) > 0")  # the match itself, always checked
            args.append(needle)
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
        if query.clock is not None:
            clauses.append("rid IN (SELECT rid FROM session_attrs WHERE name='ts-refclk' "
                           "AND instr(lower(value), ?) > 0)")
            args.append(query.clock.lower())
        if query.redundant is not None:
            dup = ("SELECT rid FROM session_attrs WHERE name='group' "
                   "AND upper(substr(value, 1, 4)) = 'DUP '")
            clauses.append(f"rid {'' if query.redundant else 'NOT '}IN ({dup})")
        if query.media:
            clauses.append("instr(' ' || media_types || ' ', ?) > 0")
            args.append(f" {query.media} ")
        if query.scope is not None:
            clauses.append("+scope=?")  # unary + keeps the planner on the name index
            args.append(query.scope)
        if query.site is not None:
            clauses.append("+site=?")
            args.append(query.site)
        if query.local is not None:
            clauses.append("+local=?")
            args.append(int(query.local))
        if query.stale is not None:
            clauses.append("(+local=0 AND +heard_gen<?)" if query.stale
                           else "(+local=1 OR +heard_gen>=?)")
            args.append(self.generation)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _records(self, rows: Iterable[tuple[Any, ...]],
                 light: bool = False, engine: bool = False) -> list[SessionRecord]:
        """Rows to records. Full rows get their attributes, read a chunk of rows at a
        time; light rows (``_LIGHT_COLUMNS``, ``_ENGINE_COLUMNS``) go without, and
        stream from a cursor."""
        to_record, generation = _to_engine_record if engine else _to_record, self.generation
        if light or engine:
            return [to_record(row, (), generation) for row in rows]
        rows = list(rows)
        attrs = self._attributes_by_rid([(row[_RID],) for row in rows])
        return [to_record(row, attrs.get(row[_RID], ()), generation) for row in rows]

    def _text_matches(self, query: SearchQuery) -> list[int] | None:
        """The remembered matches of a text search, if the sessions have not changed."""
        hit = self._matches.get(_memo_key(query))
        return hit[1] if hit is not None and hit[0] == self.content_version() else None

    def search(self, query: SearchQuery, light: bool = False) -> list[SessionRecord]:
        """A page of sessions in name order. ``light`` leaves out the SDP text and
        attributes, and keeps their listing (a page of 100: 0.54 -> 0.43 ms)."""
        columns = _LIGHT_COLUMNS if light else _COLUMNS
        with self._lock:
            rows = self._window_page(query, columns) if self._walk_window(query) else None
            if rows is None:
                where, args = self._where(query)
                if query.text and query.offset + query.limit <= MATCH_MEMO:
                    wanted = self._matching_rids(query, where, args)[
                        query.offset:query.offset + query.limit]
                    rows = self._db.execute(
                        f"SELECT {columns}, rid FROM sessions WHERE rid IN "
                        f"({','.join('?' * len(wanted))}) ORDER BY name COLLATE NOCASE, id",
                        wanted).fetchall()
                else:
                    rows = self._db.execute(
                        f"SELECT {columns}, rid FROM sessions{where} "
                        "ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?",
                        [*args, query.limit, query.offset]).fetchall()
            return self._records(rows, light)

    def _window_page(self, query: SearchQuery, columns: str) -> list[tuple[Any, ...]] | None:
        """A common text's page from the first WALK_WINDOW rows in name order, or None
        (and the text is marked rare) when they hold too few matches to fill it."""
        where, args = self._windowed_where(query, WALK_WINDOW)
        rows = self._db.execute(
            f"SELECT {columns}, rid FROM sessions{where} "
            "ORDER BY name COLLATE NOCASE, id LIMIT ? OFFSET ?",
            [*args, query.limit, query.offset]).fetchall()
        if len(rows) == query.limit:
            return rows
        assert query.text
        self._learn_rare(query.text)
        return None

    def _windowed_where(self, query: SearchQuery, rows: int) -> tuple[str, list[Any]]:
        """The walk's WHERE clause, ending the name-index walk after about ``rows`` rows:
        at the name found that far along (cached; any bound gives right answers)."""
        where, args = self._where(query, walk=True)
        now = time.monotonic()
        cached = self._cutoffs.get(rows)
        if cached is None or cached[0] <= now:
            found = self._db.execute("SELECT name FROM sessions ORDER BY name COLLATE NOCASE, "
                                     "id LIMIT 1 OFFSET ?", (rows - 1,)).fetchone()
            cached = self._cutoffs[rows] = (now + PLAN_TTL, found[0] if found else None)
        if cached[1] is None:  # fewer rows than that: the window is the whole table
            return where, args
        return f"{where} AND name COLLATE NOCASE <= ?", [*args, cached[1]]

    def _matching_rids(self, query: SearchQuery, where: str, args: list[Any]) -> list[int]:
        """Row ids of a text search's first MATCH_MEMO + 1 matches in name order. Reading
        candidates costs ~1 us each (~2,000 for a 1 % match), so they are read once for
        the page and the count that follows, and again only after the sessions change."""
        rids = self._text_matches(query)
        if rids is None:
            version = self.content_version()
            rids = [rid for (rid,) in self._db.execute(
                f"SELECT rid FROM sessions{where} ORDER BY name COLLATE NOCASE, id "
                f"LIMIT {MATCH_MEMO + 1}", args)]
            if query.stale is None:  # refreshes change staleness, not the version
                if len(self._matches) >= 32:
                    self._matches.clear()
                self._matches[_memo_key(query)] = (version, rids)
        return rids

    def shared_group_sessions(self, limit: int) -> list[SessionRecord]:
        """Sessions on a multicast group that another session uses too: the candidates
        for a conflict, at most ``limit`` of them, with their SDP (not their attributes).
        Whether the others are of another source is the caller's to see: asking SQL
        costs a join per row (~50 ms at 100,000 sessions, where this takes ~15)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, rid FROM sessions WHERE rid IN ("
                "SELECT rid FROM session_groups WHERE address IN ("
                "SELECT address FROM session_groups GROUP BY address HAVING count(*) > 1) "
                "LIMIT ?)", (limit,)).fetchall()
            return [_to_record(row, (), self.generation) for row in rows]

    def count(self, query: SearchQuery | None = None, cap: int | None = None) -> int:
        """Matching sessions; with ``cap``, counting stops at cap + 1 (cheap 'more than')."""
        with self._lock:
            query = query or SearchQuery()
            if cap and self._walk_window(query):
                where, args = self._windowed_where(query, COUNT_WINDOW)
                found = int(self._db.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM sessions{where} LIMIT {cap + 1})",
                    args).fetchone()[0])
                if found > cap:
                    return found
            rids = self._text_matches(query) if query.text else None
            if rids is not None and (len(rids) <= MATCH_MEMO or (cap and len(rids) > cap)):
                return len(rids)
            where, args = self._where(query)
            inner = f"SELECT 1 FROM sessions{where}" + (f" LIMIT {cap + 1}" if cap else "")
            return int(self._db.execute(f"SELECT count(*) FROM ({inner})",
                                        args).fetchone()[0])

    def iter_all(self, light: bool = False, own: bool = False) -> Iterator[SessionRecord]:
        """Every session (one host's file holds only its own: ``own`` changes nothing).
        ``light`` leaves out the SDP text, attributes and their listing (what the
        engine does not keep in memory), which is what makes start-up fast."""
        columns = _ENGINE_COLUMNS if light else _COLUMNS
        with self._lock:
            records = self._records(self._db.execute(f"SELECT {columns}, rid FROM sessions"),
                                    engine=light)
        yield from records

    def close(self) -> None:
        with self._lock:
            self._db.close()
