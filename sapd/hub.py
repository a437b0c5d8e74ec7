"""The one seam where a change to the directory becomes durable, then heard.

Everything that changes the directory goes through here: datagrams from the receiver,
timers, and local announcements from the announce service. The engine decides; the hub
takes its writes and events, hands the writes to the store writer, and publishes the
events to subscribers and listeners only once the store has committed them. How often
writes are handed over (the flush policy), how refreshes are batched, and what a batch
the store refused means are decided here, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from sapd.lifecycle import DROP_INTERNAL_ERROR, Engine, Event
from sapd.plumbing import logs
from sapd.plumbing.clock import SteadyClock
from sapd.plumbing.multicast import Received
from sapd.records import DirectoryBackend, Writes

log = logs.get("sapd.hub")

SUBSCRIBER_QUEUE = 10_000
FLUSH_DELAY = 0.01  # least seconds between hand-overs of new and changed sessions to the store

Done = Callable[[BaseException | None], None]
Subscriber = asyncio.Queue[dict[str, Any] | None]
Listener = Callable[[Event], None]


class Writer(Protocol):
    """Makes batches durable, in order, and says when (sapd.store.writer.StoreWriter)."""

    def submit(self, writes: Writes, done: Done | None = None) -> None: ...
    @property
    def backlog(self) -> int: ...
    @property
    def restarts(self) -> int: ...
    def close(self) -> None: ...


class Hub:
    def __init__(self, engine: Engine, reader: DirectoryBackend, writer: Writer,
                 loop: asyncio.AbstractEventLoop, clock: SteadyClock,
                 flush_delay: float = FLUSH_DELAY) -> None:
        self.engine = engine
        self.reader = reader  # the API's and the announce service's reads
        self.writer = writer
        self.loop = loop
        self.clock = clock
        self.flush_delay = flush_delay
        self.listeners: list[Listener] = []  # in-process, before subscribers
        self.refused_batches = 0
        self._subscribers: set[Subscriber] = set()
        self._pending_refresh: dict[str, tuple[float, float | None, float | None, int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushed_at = 0.0  # monotonic time of the last hand-over to the store

    # -- inputs ------------------------------------------------------------------------
    def datagram_handler(self) -> Callable[[Received], object]:
        """The receiver's per-datagram call, given what recvmsg returned: the datagram,
        its sender's IP address (whom rights follow) and its ancillary data (where it
        was heard), the engine's own method and the clock's arithmetic inlined, no frame
        of ours in between (the hot path)."""
        engine = self.engine
        receive = engine.receive_datagram
        monotonic = self.clock.monotonic
        offset = self.clock.offset

        def on_datagram(received: Received) -> object:
            data, ancillary, _flags, address = received
            outcome = receive(data, monotonic() + offset, address[0], ancillary)
            if outcome == DROP_INTERNAL_ERROR:
                log.error("datagram raised in the engine; counted as internal_error",
                          error=engine.last_internal_error, size=len(data))
            return outcome
        return on_datagram

    def after_batch(self) -> None:
        """After each socket drain or timer: expire, hand writes over (soon), re-arm."""
        self.engine.handle_timer(self.clock.now())
        if self._flush_handle is None:
            # Drains under load are a few datagrams each; handing each over on its own
            # cost a frame, an acknowledgement and a tiny transaction hundreds of times
            # a second. So hand-overs are at least flush_delay apart; on a quiet
            # network a packet's is at once.
            wait = self._flushed_at + self.flush_delay - self.clock.monotonic()
            if wait <= 0:
                self._flush_now()
            else:
                self._flush_handle = self.loop.call_later(wait, self._flush_now)
        self._arm_timer()

    async def commit(self) -> None:
        """Make what the engine holds durable now and wait for it (local announcements:
        the API answers only after this); then publish. Raises the store's error."""
        writes, events = self._take()
        if not writes:
            self._publish(events)
            return
        future: asyncio.Future[None] = self.loop.create_future()

        def done(error: BaseException | None) -> None:
            self._committed(events, error)
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self.writer.submit(writes, done)
        await future

    # -- the flush policy ------------------------------------------------------------------
    def _take(self, final: bool = False) -> tuple[Writes, list[Event]]:
        """The engine's writes and events since the last call. Refreshes only move
        last-seen: they wait for flush_refreshes, unless an upsert or delete of the same
        session goes now (which carries or ends its liveness)."""
        writes = self.engine.take_writes()
        events = []
        while (event := self.engine.next_event()) is not None:
            events.append(event)
        self._pending_refresh.update(writes.refreshes)
        writes.refreshes = {}
        for sid in (*writes.upserts, *writes.deletes):
            self._pending_refresh.pop(sid, None)
        if final:
            writes.refreshes, self._pending_refresh = self._pending_refresh, {}
        return writes, events

    def _flush_now(self) -> None:
        self._flush_handle = None
        self._flushed_at = self.clock.monotonic()
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Upserts and deletes go to the writer now; their events are published once
        committed."""
        writes, events = self._take(final)
        if writes:
            self.writer.submit(writes, lambda error: self._committed(events, error))
        elif events:
            self._publish(events)

    def flush_refreshes(self) -> None:
        if self._pending_refresh:
            batch = Writes(refreshes=self._pending_refresh)
            self._pending_refresh = {}
            self.writer.submit(batch)

    def _committed(self, events: list[Event], error: BaseException | None) -> None:
        """What a batch's outcome means, decided once. Committed: its events are heard.
        Refused: nobody hears of it (the store does not hold it, so an event would tell
        of something the API cannot show); the engine keeps it in memory, as before, and
        the next change of those sessions writes them whole again."""
        if error is None:
            self._publish(events)
            return
        self.refused_batches += 1
        log.error("directory batch refused; its events are not published",
                  error=str(error), events=len(events))

    # -- timers ------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        when = self.engine.get_timer()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_later(max(0.0, when - self.clock.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.after_batch()

    # -- who hears -------------------------------------------------------------------------
    def _publish(self, events: list[Event]) -> None:
        for event in events:
            for listener in self.listeners:
                listener(event)
            if not self._subscribers:
                continue
            item = event.to_json()
            for queue in list(self._subscribers):
                try:
                    queue.put_nowait(item)
                except asyncio.QueueFull:
                    log.warning("event subscriber fell behind; disconnecting it")
                    self._drop_subscriber(queue)

    def subscribe(self) -> Subscriber:
        queue: Subscriber = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: Subscriber) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _drop_subscriber(self, queue: Subscriber) -> None:
        self._subscribers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    # -- stop ------------------------------------------------------------------------------
    def close_subscribers(self) -> None:
        for queue in list(self._subscribers):
            self._drop_subscriber(queue)

    def close(self) -> None:
        """Hand everything over (pending refreshes too), wait for the writer, close."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self.flush(final=True)
        self.writer.close()
        self.reader.close()
