"""The directory's storage: backends behind one factory, chosen by ``[store] backend``.

A backend is a module here whose reader passes tests/contract/test_directory_backend.py
and whose writer makes batches durable in order (sapd.hub.Writer). Only "sqlite" exists
today: the reader is a SqliteDirectory on the state directory's database, the writer a
store process of its own (writer.py, process.py, frames.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sapd.plumbing.config import ConfigError
from sapd.records import DirectoryBackend
from sapd.store.sqlite import SqliteDirectory

if TYPE_CHECKING:
    import asyncio

    from sapd.store.writer import StoreWriter

BACKENDS = ("sqlite",)
DEFAULT_BACKEND = "sqlite"
SQLITE_FILE = "directory.sqlite3"


class UnknownBackend(ConfigError):
    """``[store] backend`` names no backend this sapd has."""


def backend_name(config: object) -> str:
    """``[store] backend`` from whatever configuration object is at hand: a missing
    section or key means the default."""
    section = getattr(config, "store", None)
    name = getattr(section, "backend", None) if section is not None else None
    if name is None and isinstance(section, dict):
        name = section.get("backend")
    name = name or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise UnknownBackend("store.backend", f"{name!r}: known backends are "
                             + ", ".join(repr(b) for b in BACKENDS))
    return str(name)


def open_directory(config: object, state_dir: Path) -> DirectoryBackend:
    """The reader: the directory as the API and the engine's start-up load see it.
    Opened before the writer, since opening migrates the schema."""
    backend_name(config)
    return SqliteDirectory(state_dir / SQLITE_FILE)


def start_writer(config: object, state_dir: Path, loop: asyncio.AbstractEventLoop,
                 keep_fds: tuple[int, ...] = ()) -> StoreWriter:
    """The writer: ``keep_fds`` stay open in it until its last batch is committed."""
    backend_name(config)
    # imported here: the store process (python -m sapd.store.process) runs this package's
    # __init__ too, and the writer's asyncio is ~4 MB it never uses
    from sapd.store.writer import StoreWriter  # noqa: PLC0415

    return StoreWriter(state_dir / SQLITE_FILE, loop, keep_fds=keep_fds)
