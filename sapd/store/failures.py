"""What kind of failure an exception from a SQLite write is (see records.StoreFailure).

Passing failures are about the store (its disk, its file, a lock): the batch is kept and
sent again. The others are about a value in the batch, so the hub splits the batch to
find the record at fault. A database error this table does not know counts as passing:
holding writes costs memory, wrongly blaming a record would forget sessions.
"""

from __future__ import annotations

import sqlite3

from sapd.plumbing.errors import StoreUnavailable
from sapd.records import StoreFailure

# SQLite's primary result code (the name before any "_" extension) -> (reason, passing)
_SQLITE_CODES = {
    "SQLITE_FULL": ("disk_full", True),
    "SQLITE_IOERR": ("io_error", True),
    "SQLITE_BUSY": ("locked", True),
    "SQLITE_LOCKED": ("locked", True),
    "SQLITE_CANTOPEN": ("cannot_open", True),
    "SQLITE_READONLY": ("read_only", True),
    "SQLITE_NOMEM": ("out_of_memory", True),
    "SQLITE_CORRUPT": ("corrupt", True),
    "SQLITE_NOTADB": ("corrupt", True),
    "SQLITE_PROTOCOL": ("locked", True),
    "SQLITE_CONSTRAINT": ("constraint", False),
    "SQLITE_TOOBIG": ("unstorable_value", False),
    "SQLITE_MISMATCH": ("unstorable_value", False),
    "SQLITE_RANGE": ("unstorable_value", False),
}
# SQLite's messages for them, for errors that carry no code (built by hand, or relayed)
_SQLITE_MESSAGES = {"database or disk is full": "SQLITE_FULL", "disk I/O error": "SQLITE_IOERR",
                    "database is locked": "SQLITE_BUSY"}
SQLITE_PRIMARY = ("SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN",
                  "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_CONSTRAINT")


def classify(exc: BaseException) -> tuple[str, bool]:
    """(reason, passing) of an exception raised while applying a batch."""
    if isinstance(exc, StoreFailure):
        return exc.reason, exc.transient
    if isinstance(exc, StoreUnavailable):
        return "database_unreachable", True
    if type(exc).__module__.startswith("psycopg"):  # only imported with that backend
        from sapd.store.postgresql import classify as classify_postgres  # noqa: PLC0415

        return classify_postgres(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return "constraint", False
    if isinstance(exc, (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError,
                        ValueError, TypeError)):  # binding a value SQLite cannot hold
        return "unstorable_value", False
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or _SQLITE_MESSAGES.get(str(exc), "")
        primary = next((p for p in SQLITE_PRIMARY if name.startswith(p)), name)
        if primary in _SQLITE_CODES:
            return _SQLITE_CODES[primary]
        if isinstance(exc, sqlite3.DataError):
            return "unstorable_value", False
        return "database_error", True
    if isinstance(exc, OSError):
        return "io_error", True
    return "internal_error", False
