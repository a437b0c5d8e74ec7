"""Directory writes on their own thread, so SQLite's work overlaps packet processing.

The event loop hands over :class:`~sapd.lifecycle.Writes` batches; the writer applies
whatever has queued up in one transaction and then calls each batch's callback in
the event loop (the daemon publishes a batch's events only after it is committed,
so what a subscriber hears about is already visible to API reads). sqlite3 releases
the GIL while it steps, which is what makes the second core useful here, as long as a
batch is a few steps of many rows each (see SqliteDirectory.upsert).
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sapd.directory import SqliteDirectory
from sapd.lifecycle import Writes
from sapd.plumbing import logs

log = logs.get("sapd.store")

Done = Callable[[BaseException | None], None]


def apply_writes(store: SqliteDirectory, writes: Writes) -> None:
    """One batch's writes, in the order that makes it equal to applying its parts."""
    if writes.deletes:
        store.delete(writes.deletes)
    if writes.upserts:
        store.upsert(writes.upserts.values())
    if writes.refreshes:
        store.refresh((sid, *values) for sid, values in writes.refreshes.items())


@dataclass(slots=True)
class _Job:
    writes: Writes
    done: Done | None


class StoreWriter:
    def __init__(self, store: SqliteDirectory, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self._loop = loop
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sapd-store", daemon=True)
        # After each SQLite step this thread waits for the interpreter lock; behind a busy
        # packet loop that wait is the switch interval, 5 ms by default: a batch of ~40
        # steps then took 200 ms and the store fell behind. 1 ms is still ~100 times the
        # cost of a switch.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self.submitted = 0
        self.applied = 0  # submitted - applied: batches not yet committed
        self._thread.start()

    def submit(self, writes: Writes, done: Done | None = None) -> None:
        self.submitted += 1
        self._queue.put(_Job(writes, done))

    @property
    def backlog(self) -> int:
        """Batches handed over and not yet committed (0 when the store keeps up)."""
        return self.submitted - self.applied

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

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            stop = False
            while True:  # coalesce whatever queued up meanwhile into one transaction
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
            error: BaseException | None = None
            writes = Writes()
            for item in jobs:  # one batch: fewer, larger statements (see upsert)
                writes.absorb(item.writes)
            try:
                with self.store.transaction():
                    apply_writes(self.store, writes)
            except Exception as exc:  # report, keep running: the next batch may succeed
                error = exc
                log.error("directory write failed", error=str(exc))
            self.applied += len(jobs)
            for item in jobs:
                if item.done is not None:
                    self._loop.call_soon_threadsafe(item.done, error)
            if stop:
                return

    def close(self) -> None:
        """Apply everything queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()
        self.store.close()
