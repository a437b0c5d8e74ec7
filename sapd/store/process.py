"""The directory's writer process: SQLite writes on a core of their own.

The daemon's event loop runs the engine; this process applies the
:class:`~sapd.records.Writes` batches it sends, each group of batches that queued up
in one transaction, and answers every group with an acknowledgement once committed.
A thread could not do this: Python's sqlite3 takes the interpreter lock back after
every step and every row it binds, so the writes and the packet loop took turns on one
core (in process, 10,000 new sessions/s with a thread, 13,000-14,000/s with this).

The wire is private to the daemon and its child over a socket pair (see
:mod:`sapd.store.frames`). The child ignores SIGINT and
SIGTERM (a Ctrl-C or a unit stop reaches the whole process group) and leaves when the
daemon closes its end, after applying every batch it received in full.
"""

from __future__ import annotations

import gc
import marshal
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from sapd.records import Applied, StoreFailure, Writes
from sapd.store.failures import classify
from sapd.store.frames import FRAME, FrameReader, decode_writes, frame
from sapd.store.sqlite import SqliteDirectory

_RECEIVE = 1 << 20


class Applies(Protocol):
    def apply(self, writes: Writes) -> Applied: ...
    def close(self) -> None: ...


def serve(store: Applies, sock: socket.socket, idle: Callable[[], None] | None = None,
          every: float = 1.0) -> None:
    """Apply batches until the daemon closes its end; ``idle`` runs at least ``every``
    seconds (a shared directory's heartbeat and sweep), between batches."""
    reader = FrameReader()
    due = time.monotonic() + every
    while True:
        if idle is not None:
            wait = due - time.monotonic()
            if wait <= 0 or not select.select([sock], [], [], wait)[0]:
                idle()
                due = time.monotonic() + every
                continue
        data = sock.recv(_RECEIVE)
        if not data:
            return  # a partly received batch was never handed over whole: drop it
        bodies = list(reader.feed(data))
        while bodies:  # take whatever else has arrived into the same transaction
            try:
                more = sock.recv(_RECEIVE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not more:
                break
            bodies += reader.feed(more)
        if not bodies:
            continue
        error, reason, passing = "", "", False
        try:  # anything wrong with these batches is reported with them; the hub decides
            writes = Writes()
            for body in bodies:
                writes.absorb(decode_writes(body))
            store.apply(writes)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            reason, passing = classify(exc)
        try:
            sock.sendall(frame((len(bodies), error, reason, passing)))
        except (BrokenPipeError, ConnectionResetError):
            return  # the daemon is gone; what it sent is committed


class SharedDirectory:
    """The PostgreSQL writer, opened once the server answers: a store process that
    started while the database was down still acknowledges every batch (with the
    failure, which the hub holds and retries), so the daemon's health says why."""

    def __init__(self, settings: tuple[Any, ...]) -> None:
        self.dsn, self.site, self.password_file, self.silent_after, self.heartbeat = settings
        self._store: Any = None

    def _open(self) -> Any:
        if self._store is None:
            from sapd.store.writer import PostgresTarget  # noqa: PLC0415

            target = PostgresTarget(self.dsn, self.site, self.password_file,
                                    self.silent_after, self.heartbeat)
            try:
                self._store = target.open(migrate=False)
            except Exception as exc:
                raise StoreFailure(str(exc), "database_unreachable") from exc
        return self._store

    def apply(self, writes: Writes) -> Applied:
        result: Applied = self._open().apply(writes)
        return result

    def idle(self) -> None:
        """Heartbeat, and delete what silent sites left expired; the database being
        away is not news here (the next batch reports it)."""
        # imported here: structlog brings asyncio (~4 MB), which a SQLite store process
        # never needs
        from sapd.plumbing import logs  # noqa: PLC0415

        log = logs.get("sapd.store")
        try:
            store = self._open()
            store.heartbeat()
            swept = store.sweep()
            if swept:
                log.info("expired the rows of silent sites", sessions=swept)
        except Exception as exc:
            log.debug("heartbeat failed", error=str(exc))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _hello(sock: socket.socket) -> tuple[Any, ...]:
    """The first frame: a shared directory's settings (see writer.PostgresTarget)."""
    head = sock.recv(FRAME.size, socket.MSG_WAITALL)
    (size,) = FRAME.unpack(head)
    settings: tuple[Any, ...] = marshal.loads(sock.recv(size, socket.MSG_WAITALL))
    return settings


def main(argv: list[str]) -> int:
    """``python -m sapd.store.process DATABASE|--postgresql FD``: by the daemon only."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, fd = argv
    sock = socket.socket(fileno=int(fd))
    if path == "--postgresql":
        shared = SharedDirectory(_hello(sock))
        try:
            serve(shared, sock, shared.idle, shared.heartbeat)
        finally:
            shared.close()
        return 0
    # Nothing here outlives a batch, so at the default thresholds the cyclic collector
    # only rescanned each batch's records as they were decoded and bound (about 40 % of
    # the store's time for new AES67 sessions). Rare collections cost as little as none
    # (same-run stored/s within noise) and still free a cycle an error path makes, which a
    # disabled collector would keep for the life of the process (days of disk-full retries).
    gc.set_threshold(100_000, 50, 100)
    store = SqliteDirectory(path)
    try:
        serve(store, sock)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
