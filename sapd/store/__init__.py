"""The directory's storage: backends behind one factory, chosen by ``[store] backend``.

A backend is a module here whose reader passes tests/contract/test_directory_backend.py
and whose writer makes batches durable in order (sapd.hub.Writer). "sqlite": a
SqliteDirectory on the state directory's database. "postgresql": a PostgresDirectory on
``[store] dsn``, shared with other sapd sites. Either way the writer is a store process of
its own (writer.py, process.py, frames.py).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sapd.plumbing.config import ConfigError
from sapd.records import DirectoryBackend
from sapd.store.sqlite import SqliteDirectory

if TYPE_CHECKING:
    import asyncio

    from sapd.store.writer import PostgresTarget, StoreWriter

if TYPE_CHECKING:
    from sapd.store.postgresql import PostgresDirectory

BACKENDS = ("postgresql", "sqlite")
DEFAULT_BACKEND = "sqlite"
SQLITE_FILE = "directory.sqlite3"
HEARTBEAT = 1.0  # seconds between a site's heartbeats in a shared directory
SILENT_HEARTBEATS = 3  # a site is silent after at least this many missed heartbeats


class UnknownBackend(ConfigError):
    """``[store] backend`` names no backend this sapd has."""


def _setting(section: Any, key: str) -> Any:
    if isinstance(section, dict):
        return section.get(key)
    return getattr(section, key, None)


def backend_name(config: object) -> str:
    """``[store] backend`` from whatever configuration object is at hand: a missing
    section or key means the default."""
    name = _setting(getattr(config, "store", None), "backend") or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise UnknownBackend("store.backend", f"{name!r}: known backends are "
                             + ", ".join(repr(b) for b in BACKENDS))
    return str(name)


def site_name(config: object) -> str:
    """This sapd's site (top-level ``site``): the host name unless configured."""
    return str(getattr(config, "site", None) or socket.gethostname())


def silent_after(config: object) -> float:
    """Seconds without a heartbeat after which other sites take this one for gone and
    read its rows as stale: the profile's announcement period (30 s for aes67, 300 s for
    rfc), at least three heartbeats."""
    profile = getattr(config, "expiry_profile", None)
    period = profile().default_period if callable(profile) else 30.0
    return max(SILENT_HEARTBEATS * HEARTBEAT, float(period))


def _postgres_target(config: object) -> PostgresTarget:
    from sapd.store.writer import PostgresTarget  # noqa: PLC0415  # asyncio: see start_writer

    store = getattr(config, "store", None)
    dsn = _setting(store, "dsn")
    if not dsn:
        raise ConfigError("store.dsn", "required with backend = \"postgresql\"")
    return PostgresTarget(str(dsn), site_name(config), _setting(store, "password_file"),
                          silent_after(config), HEARTBEAT)


def open_directory(config: object, state_dir: Path, own: bool = False) -> DirectoryBackend:
    """The reader: the directory as the API and the engine's start-up load see it.
    Opened before the writer, since opening migrates the schema. ``own``: the daemon's
    own reader, which holds its site in a shared directory while it runs."""
    if backend_name(config) == "postgresql":
        return _postgres_target(config).open(exclusive=own)
    return SqliteDirectory(state_dir / SQLITE_FILE)


def postgres_feed(config: object) -> PostgresDirectory:
    """A connection of its own to a shared directory, for following other sites."""
    return _postgres_target(config).open(migrate=False)


def start_writer(config: object, state_dir: Path, loop: asyncio.AbstractEventLoop,
                 keep_fds: tuple[int, ...] = ()) -> StoreWriter:
    """The writer: ``keep_fds`` stay open in it until its last batch is committed."""
    # imported here: the store process (python -m sapd.store.process) runs this package's
    # __init__ too, and the writer's asyncio is ~4 MB it never uses
    from sapd.store.writer import StoreWriter  # noqa: PLC0415

    if backend_name(config) == "postgresql":
        return StoreWriter(_postgres_target(config), loop, keep_fds=keep_fds)
    return StoreWriter(state_dir / SQLITE_FILE, loop, keep_fds=keep_fds)


def schema_status(config: object, state_dir: Path, apply: bool) -> tuple[int, int, int]:
    """(version found, version now, version this sapd writes) of the directory's schema,
    migrated first with ``apply`` (``sapd --migrate``); a check only reads."""
    if backend_name(config) == "postgresql":
        from sapd.store import postgresql  # noqa: PLC0415  # psycopg: only for this backend

        target = _postgres_target(config)
        found, now = postgresql.schema_status(target.dsn, target.password_file, apply)
        return found, now, postgresql.SCHEMA_VERSION
    from sapd.store import sqlite  # noqa: PLC0415

    path = state_dir / SQLITE_FILE
    found = sqlite.file_schema_version(path)
    if apply:
        SqliteDirectory(path).close()  # opening migrates
        return found, sqlite.SCHEMA_VERSION, sqlite.SCHEMA_VERSION
    return found, found, sqlite.SCHEMA_VERSION
