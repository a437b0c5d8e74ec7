"""Directory writes, handed from the event loop to the store process (sapd.store.process).

The loop encodes each :class:`~sapd.lifecycle.Writes` batch and queues it; a thread moves
frames to the store process and acknowledgements back, and calls each batch's callback
in the event loop once its transaction has committed (the daemon publishes a batch's
events only then, so what a subscriber hears about is already visible to API reads).
Should the store process die, another is started and every batch not yet acknowledged
is sent again: a batch only sets rows, so applying it twice leaves what once does.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sapd
from sapd.plumbing import logs
from sapd.records import StoreFailure, Writes
from sapd.store.frames import FrameReader, encode_writes, frame

if TYPE_CHECKING:
    from sapd.store.postgresql import PostgresDirectory

log = logs.get("sapd.store")

Done = Callable[[BaseException | None], None]
RESTART_PAUSES = (0.0, 0.1, 0.5, 2.0)  # by how many store processes died in a row unheard
_RECEIVE = 1 << 16


class StoreError(StoreFailure):
    """The store process could not commit a batch (its message says why, its reason
    and kind what the hub makes of it)."""


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A shared directory on PostgreSQL, as its store process is told of it: in the first
    frame over the socket pair, not on the command line, which anyone can read (the
    password stays in its file, or with libpq: PGPASSWORD, pgpass)."""

    dsn: str
    site: str
    password_file: str | None
    silent_after: float
    heartbeat: float

    def open(self, migrate: bool = True, exclusive: bool = False) -> PostgresDirectory:
        from sapd.store.postgresql import PostgresDirectory  # noqa: PLC0415  # psycopg

        return PostgresDirectory(self.dsn, self.site, self.password_file,
                                 self.silent_after, migrate=migrate, exclusive=exclusive)

    def hello(self) -> bytes:
        return frame((self.dsn, self.site, self.password_file, self.silent_after,
                      self.heartbeat))


@dataclass(slots=True)
class _Job:
    frame: bytes
    done: Done | None


@dataclass(slots=True)
class _Link:
    """One store process and where the socket pair to it stands."""

    child: subprocess.Popen[bytes]
    sock: socket.socket
    started: int = 0  # jobs at the front of the queue whose frame has gone, or is going
    rest: memoryview = field(default_factory=lambda: memoryview(b""))  # of the last one
    reader: FrameReader = field(default_factory=FrameReader)
    writing: bool = False  # the selector watches the socket for writing
    shut: bool = False  # everything is sent and our end is shut for writing
    acknowledged: int = 0


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass


class StoreWriter:
    def __init__(self, path: Path | PostgresTarget, loop: asyncio.AbstractEventLoop,
                 keep_fds: tuple[int, ...] = ()) -> None:
        """Start the store process on the directory at ``path`` (a SQLite file, or a
        PostgreSQL target); it also keeps ``keep_fds`` open (the daemon's state lock,
        held until the last write is in)."""
        self.path = path
        self._loop = loop
        self._keep_fds = keep_fds
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()  # submitted, not yet acknowledged, in order
        self._closing = False
        self._wake_out, self._wake_in = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.restarts = 0
        self._link = self._spawn()
        self._thread = threading.Thread(target=self._pump, name="sapd-store", daemon=True)
        self._thread.start()

    def _spawn(self) -> _Link:
        ours, theirs = socket.socketpair()
        # The child imports the very sapd this process runs: from its directory first,
        # and never from the working directory (-P).
        env = dict(os.environ)
        package_root = str(Path(sapd.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                         env.get("PYTHONPATH")]))
        target = "--postgresql" if isinstance(self.path, PostgresTarget) else str(self.path)
        with theirs:
            child = subprocess.Popen(
                [sys.executable, "-P", "-m", "sapd.store.process", target,
                 str(theirs.fileno())], pass_fds=(theirs.fileno(), *self._keep_fds), env=env)
        if isinstance(self.path, PostgresTarget):
            ours.sendall(self.path.hello())  # small: the socket buffer takes it at once
        ours.setblocking(False)
        return _Link(child, ours)

    def submit(self, writes: Writes, done: Done | None = None) -> None:
        job = _Job(encode_writes(writes), done)
        with self._lock:
            self._jobs.append(job)
        self._wake()

    @property
    def backlog(self) -> int:
        """Batches handed over and not yet committed (0 when the store keeps up)."""
        return len(self._jobs)

    @property
    def pid(self) -> int:
        return self._link.child.pid

    async def commit(self, writes: Writes) -> None:
        """Submit and wait until committed (for acknowledged API writes)."""
        future: asyncio.Future[None] = self._loop.create_future()

        def finished(error: BaseException | None) -> None:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self.submit(writes, finished)
        await future

    def close(self) -> None:
        """Wait until everything submitted is committed, then stop the store process."""
        with self._lock:
            self._closing = True
        self._wake()
        self._thread.join()
        self._link.child.wait()
        self._link.sock.close()
        os.close(self._wake_out)
        os.close(self._wake_in)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_in, b"\0")

    # -- the thread ----------------------------------------------------------------------
    def _pump(self) -> None:
        """Frames out, acknowledgements in, another store process when one dies."""
        selector = selectors.DefaultSelector()
        selector.register(self._wake_out, selectors.EVENT_READ)
        selector.register(self._link.sock, selectors.EVENT_READ)
        unheard = 0  # store processes in a row that died acknowledging nothing
        while True:
            link = self._link
            self._next_frame(link)
            if link.writing != bool(link.rest):
                link.writing = bool(link.rest)
                selector.modify(link.sock, selectors.EVENT_READ |
                                (selectors.EVENT_WRITE if link.writing else 0))
            ended = False
            for key, mask in selector.select():
                if key.fileobj == self._wake_out:
                    _drain(self._wake_out)
                    continue
                if mask & selectors.EVENT_READ:
                    ended = not self._receive(link)
                if mask & selectors.EVENT_WRITE and not ended:
                    ended = not self._send(link)
            if not ended:
                continue
            with self._lock:
                if link.shut and not self._jobs:
                    return
            if link.acknowledged:
                unheard = 0
            selector.unregister(link.sock)
            self._restart(unheard)
            unheard += 1
            selector.register(self._link.sock, selectors.EVENT_READ)

    def _next_frame(self, link: _Link) -> None:
        """Start on the next job's frame; with none left while closing, tell the store
        process that nothing more will come (it commits what it has and leaves)."""
        if link.rest or link.shut:
            return
        with self._lock:
            if link.started < len(self._jobs):
                link.rest = memoryview(self._jobs[link.started].frame)
                link.started += 1
            elif self._closing:
                link.sock.shutdown(socket.SHUT_WR)
                link.shut = True

    def _receive(self, link: _Link) -> bool:
        """Take in acknowledgements; False once the store process has gone."""
        try:
            data = link.sock.recv(_RECEIVE)
        except ConnectionResetError:
            return False
        for body in link.reader.feed(data):
            count, error, reason, passing = marshal.loads(body)
            link.started -= count
            link.acknowledged += count
            self._acknowledged(count, error, reason, passing)
        return bool(data)

    def _send(self, link: _Link) -> bool:
        """Send what the socket takes of the current frame; False once the store
        process has gone."""
        try:
            link.rest = link.rest[link.sock.send(link.rest):]
        except BlockingIOError:  # writable after all only for a moment
            pass
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _restart(self, unheard: int) -> None:
        """Another store process, after a pause that grows while they die unheard; every
        job not yet acknowledged goes to it again."""
        self._link.child.wait()
        self._link.sock.close()
        log.error("store process ended; starting another", code=self._link.child.returncode,
                  unacknowledged=len(self._jobs))
        attempt = unheard
        while True:
            time.sleep(RESTART_PAUSES[min(attempt, len(RESTART_PAUSES) - 1)])
            try:
                self._link = self._spawn()
                break
            except OSError as exc:  # e.g. out of processes: the batches wait in memory
                log.error("cannot start the store process", error=str(exc))
                attempt += 1
        self.restarts += 1

    def _acknowledged(self, count: int, error: str, reason: str, passing: bool) -> None:
        with self._lock:
            jobs = [self._jobs.popleft() for _ in range(count)]
        failure = StoreError(error, reason, passing) if error else None
        if error:
            log.warning("directory write refused", error=error, reason=reason,
                        batches=count)
        for job in jobs:
            if job.done is not None:
                self._loop.call_soon_threadsafe(job.done, failure)
