"""The one seam where a change to the directory becomes durable, then heard.

Everything that changes the directory goes through here: datagrams from the receiver,
timers, and local announcements from the announce service. The engine decides; the hub
takes its writes and events, hands the writes to the store writer, and publishes the
events to subscribers and listeners only once the store has committed them. How often
writes are handed over (the flush policy), how refreshes are batched, and what a batch
the store refused means are decided here, once.

So is load shedding: while the receiver is behind the network by RECEIVE_BEHIND (the
datagrams it reads have waited that long in the kernel), or while STORE_QUEUE_BOUND new
or changed sessions wait for the store, the engine drops new sessions under a named
reason (SAP repeats them) so that what is known stays current, the API gets its turns
and nothing is lost uncounted. Behind the network, sources sending within their rate
are spared: a burst the receive buffer holds is taken in full, as before. Once the
kernel drops datagrams (its buffer is full; the flood's senders, thinned out, look no
busier than a quiet one), every new session is shed until the receiver has caught up.
Behind the store, no new session is taken until it catches up. Changes and deletions
of known sessions are never shed.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sapd.eventlog import EventLog, Subscription
from sapd.lifecycle import (
    DROP_INTERNAL_ERROR,
    DROP_SHED_RECEIVE,
    DROP_SHED_STORE,
    Engine,
    Event,
    Shedding,
)
from sapd.plumbing import logs
from sapd.plumbing.clock import SteadyClock
from sapd.plumbing.multicast import Received
from sapd.records import DirectoryBackend, SessionRecord, StoreFailure, Writes

log = logs.get("sapd.hub")

FLUSH_DELAY = 0.01  # least seconds between hand-overs of new and changed sessions to the store
RECEIVE_BEHIND = 0.02  # seconds datagrams may wait in the kernel before new sessions are shed
STORE_QUEUE_BOUND = 10_000  # new or changed sessions waiting for the store, then shedding
# Behind the network or the store, sources within this many announcements of a full rate
# bucket (at most this far beyond their rate) are not shed: a device announcing its
# streams at once is taken in full; the flood's senders, past their first few dozen, are
# not. (Memory stays bounded by max_sessions either way.)
SHED_ALLOWANCE = 64.0
SHED_RECEIVE = Shedding(DROP_SHED_RECEIVE, SHED_ALLOWANCE)
SHED_RECEIVE_ALL = Shedding(DROP_SHED_RECEIVE)
SHED_STORE = Shedding(DROP_SHED_STORE, SHED_ALLOWANCE)
SHED_LOG_EVERY = 60.0  # seconds between log lines about shedding

Done = Callable[[BaseException | None], None]
Listener = Callable[[Event], None]


class ReceiverLoad(Protocol):
    """How far the receiver is behind (sapd.plumbing.multicast.MulticastReceiver)."""

    def queue_delay(self) -> float: ...
    @property
    def kernel_drops(self) -> int: ...


class Writer(Protocol):
    """Makes batches durable, in order, and says when (sapd.store.writer.StoreWriter)."""

    def submit(self, writes: Writes, done: Done | None = None) -> None: ...
    @property
    def backlog(self) -> int: ...
    @property
    def restarts(self) -> int: ...
    def close(self) -> None: ...


CLOCK_STEP = 1.0  # seconds the wall clock must move against elapsed time to be a step
CLOCK_STEPS_KEPT = 64  # steps remembered, to date times before the latest ones
RETRY_PAUSES = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # by refusals in a row of one batch
UNDONE = "undone"  # records the store could not take, forgotten by the engine


@dataclass(slots=True)
class _Batch:
    """Writes on their way to the store, the events they make true, and the local
    commits waiting for them (each watching the sessions it wrote)."""

    writes: Writes
    events: list[Event]
    waiters: list[tuple[asyncio.Future[None], frozenset[str]]] = field(default_factory=list)
    refusals: int = 0  # transient refusals in a row
    piece: bool = False  # a part of a split batch: nothing more joins it


def _sids(writes: Writes) -> list[str]:
    return list(dict.fromkeys((*writes.deletes, *writes.upserts, *writes.refreshes)))


def _halves(batch: _Batch) -> tuple[_Batch, _Batch]:
    """A batch split in two by session, each half with its sessions' events (an event
    of no session written goes with the first)."""
    sids = _sids(batch.writes)
    second = set(sids[len(sids) // 2:])
    writes = batch.writes
    parts = []
    for keep in (lambda sid: sid not in second), second.__contains__:
        part = Writes({s: r for s, r in writes.upserts.items() if keep(s)},
                      {s for s in writes.deletes if keep(s)},
                      {s: v for s, v in writes.refreshes.items() if keep(s)})
        parts.append(_Batch(part, [e for e in batch.events if keep(e.session_id)],
                            piece=True))
    parts[1].waiters = batch.waiters  # answered once the last half has landed
    return parts[0], parts[1]


def _without(batch: _Batch, sid: str) -> None:
    batch.writes.upserts.pop(sid, None)
    batch.writes.deletes.discard(sid)
    batch.writes.refreshes.pop(sid, None)
    batch.events = [e for e in batch.events if e.session_id != sid]


class Hub:
    def __init__(self, engine: Engine, reader: DirectoryBackend, writer: Writer,
                 loop: asyncio.AbstractEventLoop, clock: SteadyClock,
                 flush_delay: float = FLUSH_DELAY,
                 retry_pauses: tuple[float, ...] = RETRY_PAUSES,
                 store_queue_bound: int = STORE_QUEUE_BOUND) -> None:
        self.engine = engine
        self.reader = reader  # the API's and the announce service's reads
        self.writer = writer
        self.loop = loop
        self.clock = clock
        self.flush_delay = flush_delay
        self.retry_pauses = retry_pauses
        self.store_queue_bound = store_queue_bound
        self.receiver: ReceiverLoad | None = None  # set by the daemon once it is open
        self._kernel_drops = 0  # as last seen
        self._overflowing = False  # the kernel dropped since the receiver last caught up
        self._shed_logged_at = -SHED_LOG_EVERY
        self.listeners: list[Listener] = []  # in-process, before subscribers
        self.events = EventLog()  # ids, history and resync for subscribers
        self.failures: Counter[str] = Counter()  # refusals by reason, and records undone
        self.degraded: str | None = None  # the reason while a refused batch waits
        self._pending_refresh: dict[str, tuple[float, float | None, float | None, int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushed_at = 0.0  # monotonic time of the last hand-over to the store
        # Not yet committed, in order. Only the first is with the writer: what a refusal
        # means (retry it, or split it to find the record) must be decided before anything
        # behind it is written, or a retried batch would land over a later one.
        self._queue: deque[_Batch] = deque()
        self._in_flight = False
        self._retry: asyncio.TimerHandle | None = None
        # The engine runs on the steady clock, so a step of the wall clock moves no
        # deadline; what it hands out to be stored or heard is dated in wall time here:
        # (steady time from which, wall minus steady) for each step seen.
        self._steps: list[tuple[float, float]] = []
        self._drift = clock.drift()
        self._drift_checked = clock.now()

    @property
    def refused_batches(self) -> int:
        return sum(n for reason, n in self.failures.items() if reason != UNDONE)

    def failure_counts(self) -> dict[str, int]:
        """Refusals by reason, records undone, and store processes replaced (their
        batches were sent again), for /v1/stats and /metrics."""
        counts = dict(self.failures)
        if self.writer.restarts:
            counts["store_process"] = self.writer.restarts
        return dict(sorted(counts.items()))

    @property
    def pending(self) -> int:
        """Batches taken from the engine and not yet committed."""
        return len(self._queue)

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
        """After each socket drain or timer: expire, hand writes over (soon), re-arm,
        and say whether the next drain sheds new sessions."""
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
        self._set_shedding()

    # -- load shedding ---------------------------------------------------------------------
    @property
    def queued_sessions(self) -> int:
        """New or changed sessions handed over and not yet committed."""
        return sum(len(batch.writes.upserts) for batch in self._queue)

    def _set_shedding(self) -> None:
        receiver = self.receiver
        behind = receiver is not None and receiver.queue_delay() >= RECEIVE_BEHIND
        if receiver is not None and receiver.kernel_drops != self._kernel_drops:
            self._kernel_drops = receiver.kernel_drops
            self._overflowing = True
        elif not behind:
            self._overflowing = False
        if self._overflowing:
            shedding: Shedding | None = SHED_RECEIVE_ALL
        elif behind:
            shedding = SHED_RECEIVE
        elif self.queued_sessions >= self.store_queue_bound:
            shedding = SHED_STORE
        else:
            shedding = None
        if shedding is not None and self.engine.shedding is None:
            now = self.clock.monotonic()
            if now - self._shed_logged_at >= SHED_LOG_EVERY:
                self._shed_logged_at = now
                log.warning("cannot keep up: shedding new sessions (SAP repeats them); "
                            "known sessions stay current", reason=shedding.reason,
                            waiting_for_store=self.queued_sessions)
        self.engine.shedding = shedding

    async def commit(self) -> None:
        """Make what the engine holds durable now and wait for it (local announcements:
        the API answers only after this); then publish. While the store refuses for a
        passing reason (disk full) this waits until it takes the batch; a session of it
        the store cannot take at all raises StoreFailure (and is undone)."""
        writes, events = self._take()
        watched = frozenset((*writes.deletes,
                             *(s for s, r in writes.upserts.items() if r.local)))
        future: asyncio.Future[None] = self.loop.create_future()
        batch = self._enqueue(writes, events)
        if batch is None:
            return
        batch.waiters.append((future, watched))
        self._send()
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
        self._note_clock()
        if self._steps:
            self._to_wall_time(writes, events)
        self._pending_refresh.update(writes.refreshes)
        writes.refreshes = {}
        for sid in (*writes.upserts, *writes.deletes):
            self._pending_refresh.pop(sid, None)
        if final:
            writes.refreshes, self._pending_refresh = self._pending_refresh, {}
        return writes, events

    # -- wall time for what is stored and heard -------------------------------------------
    def _note_clock(self) -> None:
        now = self.clock.now()
        drift = self.clock.wall() - now
        if abs(drift - self._drift) >= CLOCK_STEP:
            # Dated from the last look: what the engine made since is dated after the step.
            self._steps.append((self._drift_checked, drift))
            del self._steps[:-CLOCK_STEPS_KEPT]
            log.info("clock step noted: times stored and heard from now are dated in "
                     "wall time", step=round(drift - self._drift, 3))
            self._drift = drift
        self._drift_checked = now

    def _offset_at(self, steady: float) -> float:
        """Wall time minus steady time as it stood at ``steady``."""
        offset = 0.0
        for since, drift in self._steps:
            if steady <= since:  # made before the look that found the step
                break
            offset = drift
        return offset

    def _record_in_wall_time(self, record: SessionRecord) -> SessionRecord:
        seen = self._offset_at(record.last_seen)
        return record.with_changes(
            first_seen=record.first_seen + self._offset_at(record.first_seen),
            last_seen=record.last_seen + seen,
            expires=None if record.expires is None else record.expires + seen)

    def _in_steady_time(self, record: SessionRecord | None) -> SessionRecord | None:
        """A stored record back on the engine's clock (its deadline then holds)."""
        if record is None or not self._steps:
            return record
        offset = self._drift
        return record.with_changes(
            first_seen=record.first_seen - offset, last_seen=record.last_seen - offset,
            expires=None if record.expires is None else record.expires - offset)

    def _to_wall_time(self, writes: Writes, events: list[Event]) -> None:
        """Only after a clock step: the engine's steady times, as wall times."""
        upserts = writes.upserts
        for sid, record in upserts.items():
            upserts[sid] = self._record_in_wall_time(record)
        refreshes = writes.refreshes
        for sid, (last_seen, expires, period, msg_hash) in refreshes.items():
            offset = self._offset_at(last_seen)
            refreshes[sid] = (last_seen + offset,
                              None if expires is None else expires + offset, period, msg_hash)
        for n, event in enumerate(events):
            events[n] = Event(event.kind, event.session_id,
                              event.time + self._offset_at(event.time),
                              self._record_in_wall_time(event.record), event.heard_via)

    def _enqueue(self, writes: Writes, events: list[Event]) -> _Batch | None:
        """Queue a batch behind the others (joining the last one while it waits); events
        without writes are heard at once when nothing is ahead of them."""
        if not writes and not self._queue:
            self._publish(events)
            return None
        last = self._queue[-1] if self._queue else None
        with_the_writer = self._in_flight and last is self._queue[0]
        if last is not None and not last.piece and not with_the_writer:
            last.writes.absorb(writes)
            last.events += events
            return last
        batch = _Batch(writes, events)
        self._queue.append(batch)
        return batch

    def _flush_now(self) -> None:
        self._flush_handle = None
        self._flushed_at = self.clock.monotonic()
        self.flush()

    def flush(self, final: bool = False) -> None:
        """Upserts and deletes go to the writer (behind what it has not committed yet);
        their events are published once committed."""
        writes, events = self._take(final)
        if writes or events:
            self._enqueue(writes, events)
            self._send()

    def flush_refreshes(self) -> None:
        if self._pending_refresh:
            batch = Writes(refreshes=self._pending_refresh)
            self._pending_refresh = {}
            self._enqueue(batch, [])
            self._send()

    def _send(self) -> None:
        if self._in_flight or self._retry is not None or not self._queue:
            return
        batch = self._queue[0]
        self._in_flight = True
        self.writer.submit(batch.writes, lambda error: self._committed(batch, error))

    def _committed(self, batch: _Batch, error: BaseException | None) -> None:
        """What a batch's outcome means, decided once. Committed: its events are heard
        and its waiters answered. Refused for a passing reason (disk full, I/O error, a
        lock, the store process gone): kept, first in line, and sent again after a pause
        that grows, so nothing heard meanwhile is lost and nothing is heard before it is
        durable. Refused for a value in it: split in halves until the record at fault is
        alone; that one is undone in the engine (memory then holds what the store
        holds) and counted, and every other record lands."""
        self._in_flight = False
        if not self._queue or self._queue[0] is not batch:  # closed meanwhile
            return
        if error is None:
            self._queue.popleft()
            if self.degraded is not None:
                log.info("the store takes writes again", after=batch.refusals)
                self.degraded = None
            self._publish(batch.events)
            for future, _ in batch.waiters:
                if not future.done():
                    future.set_result(None)
            self._send()
            self._set_shedding()  # the store may have caught up
            return
        reason = error.reason if isinstance(error, StoreFailure) else "unknown"
        transient = error.transient if isinstance(error, StoreFailure) else True
        self.failures[reason] += 1
        if transient:
            self._refused_for_now(batch, reason, error)
            return
        sids = _sids(batch.writes)
        self._queue.popleft()
        if len(sids) > 1:  # bisect: the halves go first, in order
            self._queue.extendleft(reversed(_halves(batch)))
        else:
            self._undo(sids, batch, error)
        self._send()

    def _refused_for_now(self, batch: _Batch, reason: str, error: BaseException) -> None:
        if self.degraded is None:
            log.error("the store refuses writes; holding them until it takes them",
                      reason=reason, error=str(error))
        self.degraded = reason
        # What queued up behind joins the batch that waits (one transaction, not many).
        while len(self._queue) > 1 and not batch.piece and not self._queue[1].piece:
            later = self._queue[1]
            del self._queue[1]
            batch.writes.absorb(later.writes)
            batch.events += later.events
            batch.waiters += later.waiters
        pause = self.retry_pauses[min(batch.refusals, len(self.retry_pauses) - 1)]
        batch.refusals += 1
        self._retry = self.loop.call_later(pause, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._send()

    def _undo(self, sids: list[str], batch: _Batch, error: BaseException) -> None:
        """The store cannot take this session's write: forget it everywhere it waits,
        and let the engine hold what the store holds. A local commit that wrote it
        hears why."""
        reason = error.reason if isinstance(error, StoreFailure) else "unknown"
        for sid in sids:
            self.failures[UNDONE] += 1
            self._pending_refresh.pop(sid, None)
            refusal = StoreFailure(f"the store cannot take session {sid}: {error}", reason,
                                   transient=False)
            for other in (batch, *self._queue):
                _without(other, sid)
                for future, watched in other.waiters:
                    if sid in watched and not future.done():
                        future.set_exception(refusal)
            self.engine.revert(sid, self._in_steady_time(self.reader.get(sid)))
            log.error("the store cannot take this session; forgotten until announced again",
                      id=sid, reason=reason, error=str(error))
        for future, _ in batch.waiters:  # what they wrote has landed or been undone
            if not future.done():
                future.set_result(None)

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
            self.events.publish(event.kind, event.to_json)

    def publish_remote(self, events: list[Event]) -> None:
        """Other sites' committed changes to a shared directory (sapd.store.campus): for
        subscribers only. In-process listeners (LDAP publication, history) are about
        this site's sessions."""
        for event in events:
            self.events.publish(event.kind, event.to_json)

    def resync_remote(self) -> None:
        """Other sites' changes were missed (sapd.store.campus): subscribers re-read."""
        self.events.resync()

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        return self.events.subscribe(last_event_id)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.events.unsubscribe(subscription)

    @property
    def subscribers(self) -> int:
        return self.events.subscribers

    # -- stop ------------------------------------------------------------------------------
    def close_subscribers(self) -> None:
        self.events.close()

    def close(self) -> None:
        """Hand everything over (pending refreshes too), wait for the writer, close.
        What the store still refuses then is lost, and the log says how much."""
        for handle in (self._flush_handle, self._timer, self._retry):
            if handle is not None:
                handle.cancel()
        self._take_rest(final=True)
        rest = [b for n, b in enumerate(self._queue) if n or not self._in_flight]
        if rest:
            writes, events = Writes(), []
            for batch in rest:
                writes.absorb(batch.writes)
                events += batch.events
            sessions = len(_sids(writes))

            def done(error: BaseException | None) -> None:
                if error is not None:
                    log.error("the store refused the last writes; lost", sessions=sessions,
                              error=str(error))
            self.writer.submit(writes, done)
        self._queue.clear()
        self.writer.close()
        self.reader.close()

    def _take_rest(self, final: bool) -> None:
        writes, events = self._take(final)
        if writes or events:
            self._enqueue(writes, events)
