"""Events that can resume: ids, a bounded history, and an explicit resync.

Every published event gets an id ``RUN-SEQ``: RUN names this daemon run, SEQ counts
from 1. A subscriber that gives the id of the last event it saw (SSE's
``Last-Event-ID``) first gets what followed it, if the history still holds that;
otherwise (too old, or an id from another run) it gets one ``resync`` item, which says:
re-read the directory, then carry on with the events that follow. A subscriber that
falls further behind than its queue holds is not disconnected and is not silently
short of events either: its queue is replaced by a single ``resync``.

Events are serialised only when someone reads them, and then once, to JSON bytes
(with their id) that every reader shares: the history then holds ~600 bytes an event,
not a dict tree several times that.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

HISTORY = 10_000  # events kept for consumers that reconnect
SUBSCRIBER_QUEUE = 10_000  # events one subscriber may lag behind before a resync
RESYNC = "resync"  # in a queue: events were lost here; re-read the directory


class Entry:
    """One published event: its kind, its id, and its JSON (with ``event_id``), made on
    first use."""

    __slots__ = ("_data", "_make", "event_id", "kind", "seq")

    def __init__(self, seq: int, event_id: str, kind: str,
                 make: Callable[[], dict[str, Any]]) -> None:
        self.seq = seq
        self.event_id = event_id
        self.kind = kind
        self._make: Callable[[], dict[str, Any]] | None = make
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self._make is not None
            self._data = orjson.dumps({**self._make(), "event_id": self.event_id},
                                      default=str, option=orjson.OPT_NON_STR_KEYS)
            self._make = None
        return self._data


class Subscription:
    """One consumer's queue. :meth:`next` returns entries in order, a resync marker
    (``RESYNC``) where events were lost to it, or None once closed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.resyncs = 0
        self._queue: deque[Entry | str] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, entry: Entry | str) -> bool:
        """Queue an entry; True when the queue was full and became one resync (what
        was missed is then what a re-read of the directory shows, this entry too:
        events are published after their commit)."""
        if self._closed:
            return False
        overflow = len(self._queue) >= self.limit
        if overflow:
            self._queue.clear()
            self._queue.append(RESYNC)
            self.resyncs += 1
        elif entry is not RESYNC or not self._queue or self._queue[-1] is not RESYNC:
            self._queue.append(entry)
        self._ready.set()
        return overflow

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def next(self, timeout: float | None = None) -> Entry | str | None:
        """The next entry, RESYNC, None when closed; raises TimeoutError after
        ``timeout`` seconds with nothing to give."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            if timeout is None:
                await self._ready.wait()
            else:
                await asyncio.wait_for(self._ready.wait(), timeout)
        return self._queue.popleft()



def new_run_id() -> str:
    """Short and distinct across restarts: seconds since the epoch and the pid, in hex."""
    return f"{int(time.time()):x}{os.getpid() & 0xFFFF:04x}"


class EventLog:
    def __init__(self, history: int = HISTORY, queue: int = SUBSCRIBER_QUEUE,
                 run: str | None = None) -> None:
        self.run = run or new_run_id()
        self.queue_limit = queue
        self.seq = 0
        self._history: deque[Entry] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self.resyncs = 0  # subscribers' queues that overflowed into a resync
        self._lost_through = -1  # events up to this seq may have missed some: see resync

    def publish(self, kind: str, make: Callable[[], dict[str, Any]]) -> Entry:
        self.seq += 1
        entry = Entry(self.seq, f"{self.run}-{self.seq}", kind, make)
        self._history.append(entry)
        for subscription in self._subscribers:
            if subscription.put(entry):
                self.resyncs += 1
        return entry

    def resync(self) -> None:
        """Changes were missed here (another site's removals that the shared directory
        no longer keeps): every subscriber is told to re-read the directory, and so is
        one that resumes from an event before this point."""
        self._lost_through = self.seq
        for subscription in self._subscribers:
            subscription.put(RESYNC)

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """A new subscription; with ``last_event_id``, first what followed that event
        (or RESYNC when the history no longer reaches back to it)."""
        subscription = Subscription(self.queue_limit)
        if last_event_id:
            for entry in self.since(last_event_id):
                subscription.put(entry)
        self._subscribers.add(subscription)
        return subscription

    def since(self, last_event_id: str) -> list[Entry | str]:
        run, _, seq_text = last_event_id.rpartition("-")
        # ASCII digits, few of them: isdigit() takes '\u00b2', which int() refuses
        seq = int(seq_text) if seq_text.isascii() and seq_text.isdigit() and \
            len(seq_text) <= 20 else -1
        if run != self.run or not 0 <= seq <= self.seq or seq <= self._lost_through:
            return [RESYNC]
        if seq == self.seq:
            return []
        oldest = self._history[0].seq if self._history else self.seq + 1
        if seq + 1 < oldest:
            return [RESYNC]
        return [e for e in itertools.islice(self._history, seq + 1 - oldest, None)]

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription.close()

    def close(self) -> None:
        for subscription in list(self._subscribers):
            self.unsubscribe(subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
