"""The hub with a real engine, a fake clock and an in-memory writer: durable, then heard."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sapd.hub import Done, Hub
from sapd.lifecycle import Engine
from sapd.plumbing.clock import SteadyClock
from sapd.records import SessionRecord, StoreFailure, Writes
from sapd.store.failures import classify
from sapd.store.sqlite import SqliteDirectory
from tests.packets import announce, delete, sdp_text
from tests.support import FakeTime


@dataclass
class MemoryWriter:
    """Keeps submitted batches; ``answer`` acknowledges the oldest (or refuses it)."""

    batches: list[tuple[Writes, Done | None]] = field(default_factory=list)
    restarts: int = 0
    closed: bool = False

    def submit(self, writes: Writes, done: Done | None = None) -> None:
        self.batches.append((writes, done))

    @property
    def backlog(self) -> int:
        return len(self.batches)

    def answer(self, error: BaseException | None = None) -> Writes:
        writes, done = self.batches.pop(0)
        if done is not None:
            done(error)
        return writes

    def close(self) -> None:
        self.closed = True


@dataclass
class Rig:
    hub: Hub
    time: FakeTime
    writer: MemoryWriter
    heard: list[str]


@pytest.fixture
def rig() -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    fake = FakeTime()
    writer = MemoryWriter()
    reader = SqliteDirectory(":memory:")
    hub = Hub(Engine(), reader, writer, loop, SteadyClock(fake.wall, fake.monotonic),
              flush_delay=0.0)
    heard: list[str] = []
    hub.listeners.append(lambda event: heard.append(f"{event.kind} {event.record.name}"))
    yield Rig(hub, fake, writer, heard)
    loop.close()


def receive(rig: Rig, *names: str) -> None:
    on_datagram = rig.hub.datagram_handler()
    for n, name in enumerate(names, start=1):
        on_datagram(heard(announce(sdp_text(session=n, name=name))))
    rig.hub.after_batch()


def test_events_are_heard_only_once_the_store_committed(rig: Rig) -> None:
    receive(rig, "A")
    assert rig.heard == [] and rig.writer.backlog == 1
    writes = rig.writer.answer()
    assert [r.name for r in writes.upserts.values()] == ["A"]
    assert rig.heard == ["new A"]


def test_events_of_a_refused_batch_were_published(rig: Rig) -> None:
    """The daemon used to publish a batch's events whatever the store answered."""
    receive(rig, "A")
    rig.writer.answer(RuntimeError("disk full"))
    assert rig.heard == []
    assert rig.hub.refused_batches == 1


def test_forward_clock_step_expired_every_session(rig: Rig) -> None:
    """A wall-clock step of two hours (NTP on a board without a battery clock) used to
    expire every session at the next timer; elapsed time is what ages them now."""
    receive(rig, "A", "B", "C")
    rig.writer.answer()
    rig.time.wall_now += 7200.0
    rig.time.monotonic_now += 1.0
    rig.hub.after_batch()
    assert len(rig.hub.engine) == 3
    assert rig.heard == ["new A", "new B", "new C"]
    assert rig.hub.clock.drift() == pytest.approx(7199.0)
    rig.time.monotonic_now += 7200.0  # silence, really this time
    rig.hub.after_batch()
    assert len(rig.hub.engine) == 0


def test_stored_times_stayed_off_by_a_clock_step_until_restart(rig: Rig) -> None:
    """Deadlines follow elapsed time (above), but what is stored and shown across hosts
    (first and last seen, expiry, event times) must follow the wall clock: they used to
    stay off by every step until sapd restarted."""
    receive(rig, "A")
    before = next(iter(rig.writer.answer().upserts.values()))
    assert before.last_seen == rig.time.wall_now
    rig.time.wall_now += 7200.0  # NTP steps the clock two hours forward
    rig.time.monotonic_now += 5.0
    receive(rig, "A", "B")  # A heard again (a refresh), B new
    (new,) = rig.writer.answer().upserts.values()
    assert new.first_seen == new.last_seen == rig.time.wall_now
    assert new.expires is not None and new.expires > rig.time.wall_now
    rig.hub.flush_refreshes()
    ((sid, (last_seen, expires, _, _)),) = rig.writer.answer().refreshes.items()
    assert sid == before.id and last_seen == rig.time.wall_now
    assert expires is not None and expires > rig.time.wall_now
    rig.time.monotonic_now += 1.0
    on_datagram = rig.hub.datagram_handler()
    on_datagram(heard(announce(sdp_text(session=1, version=2, name="A2"))))
    rig.hub.after_batch()
    (changed,) = rig.writer.answer().upserts.values()
    assert changed.first_seen == before.first_seen  # seen first before the step
    assert changed.last_seen == rig.time.wall_now
    assert rig.heard[-1] == "changed A2"
    assert len(rig.hub.engine) == 2  # and nothing expired


def test_local_commit_keeps_the_refresh_bookkeeping(rig: Rig) -> None:
    """A refresh batched for later must not follow (and undo) an upsert of the same
    session that a local commit wrote at once; the announce service used to skip this."""
    receive(rig, "A")
    rig.writer.answer()
    rig.time.monotonic_now += 5.0
    receive(rig, "A")  # heard again: a refresh, held for the periodic flush
    record = next(iter(rig.hub.engine.records()))
    rig.hub.engine.put_local(record.with_changes(local=True), rig.hub.clock.now())

    async def commit() -> None:
        task = asyncio.ensure_future(rig.hub.commit())
        await asyncio.sleep(0)
        writes = rig.writer.answer()
        assert list(writes.upserts) == [record.id] and not writes.refreshes
        await task
    rig.hub.loop.run_until_complete(commit())
    rig.hub.flush_refreshes()
    assert rig.writer.backlog == 0  # the held refresh went with the upsert


def test_close_hands_over_pending_refreshes_and_closes_the_writer(rig: Rig) -> None:
    receive(rig, "A")
    rig.writer.answer()
    rig.time.monotonic_now += 5.0
    receive(rig, "A")
    assert rig.writer.backlog == 0
    rig.hub.close()
    assert list(rig.writer.answer().refreshes) == [next(iter(rig.hub.engine.records())).id]
    assert rig.writer.closed


# -- a real SQLite directory behind the hub, with failures injected at the backend ----------
def heard(data: bytes, source: str = "10.0.0.1") -> Any:
    """What the receiver hands the hub's datagram handler for ``data`` sent from
    ``source``: recvmsg's result (data, ancillary data, flags, sender's address)."""
    return (data, [], 0, (source, 9875))


@dataclass
class FaultyBackend:
    """The one fake: the store backend's apply, failing as told before it writes."""

    directory: SqliteDirectory
    disk_full: bool = False
    unstorable: set[str] = field(default_factory=set)  # session names it cannot hold

    def apply(self, writes: Writes) -> None:
        if self.disk_full:
            raise sqlite3.OperationalError("database or disk is full")
        for record in writes.upserts.values():
            if record.name in self.unstorable:
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
        self.directory.apply(writes)


@dataclass
class InProcessWriter:
    """The store process's part in process: apply, classify a failure, answer later
    (from the loop, as the real writer's thread does)."""

    backend: FaultyBackend
    loop: asyncio.AbstractEventLoop
    restarts: int = 0
    submitted: int = 0
    in_flight: int = 0

    def submit(self, writes: Writes, done: Done | None = None) -> None:
        self.submitted += 1
        self.in_flight += 1
        error: BaseException | None = None
        try:
            self.backend.apply(writes)
        except Exception as exc:
            reason, passing = classify(exc)
            error = StoreFailure(str(exc), reason, passing)

        def answer() -> None:
            self.in_flight -= 1
            if done is not None:
                done(error)
        self.loop.call_soon(answer)

    @property
    def backlog(self) -> int:
        return self.in_flight

    def close(self) -> None:
        pass


@dataclass
class StoreRig:
    hub: Hub
    time: FakeTime
    backend: FaultyBackend
    heard: list[str]

    def receive(self, *names: str, first: int = 1, version: int = 1) -> None:
        on_datagram = self.hub.datagram_handler()
        for n, name in enumerate(names, start=first):
            on_datagram(heard(announce(sdp_text(session=n, version=version, name=name))))
        self.hub.after_batch()

    def settle(self, until: Callable[[], bool] | None = None) -> None:
        """Run the loop until every batch is committed (or ``until`` holds)."""
        done = until or (lambda: self.hub.pending == 0)

        async def wait() -> None:
            while not done():
                await asyncio.sleep(0.001)
        self.hub.loop.run_until_complete(asyncio.wait_for(wait(), 5))

    def stored(self) -> set[str]:
        return {r.name for r in self.backend.directory.iter_all()}

    def in_memory(self) -> set[str]:
        return {r.name for r in self.hub.engine.records()}


@pytest.fixture
def store_rig(tmp_path: Path) -> Iterator[StoreRig]:
    loop = asyncio.new_event_loop()
    fake = FakeTime()
    directory = SqliteDirectory(tmp_path / "directory.sqlite3")
    backend = FaultyBackend(directory)
    hub = Hub(Engine(), directory, InProcessWriter(backend, loop), loop,
              SteadyClock(fake.wall, fake.monotonic), flush_delay=0.0,
              retry_pauses=(0.001, 0.002, 0.005))
    heard: list[str] = []
    hub.listeners.append(lambda event: heard.append(f"{event.kind} {event.record.name}"))
    yield StoreRig(hub, fake, backend, heard)
    directory.close()
    loop.close()


def test_a_record_the_store_cannot_take_cost_every_other_record_of_its_batch(
        store_rig: StoreRig) -> None:
    """One unstorable record (VLC's 20-digit o= numbers) used to fail its whole batch:
    the others were never stored, though listed in memory. Now the batch is split until
    the bad record is alone; it is forgotten (memory agrees with disk), counted, and the
    next announcement of it tries again."""
    store_rig.backend.unstorable = {"BAD"}
    store_rig.receive("A", "B", "BAD", "C", "D")
    store_rig.settle()
    assert store_rig.stored() == {"A", "B", "C", "D"}
    assert store_rig.in_memory() == {"A", "B", "C", "D"}
    assert sorted(store_rig.heard) == ["new A", "new B", "new C", "new D"]
    assert store_rig.hub.failures["undone"] == 1
    assert store_rig.hub.failures["unstorable_value"] >= 1
    assert store_rig.hub.degraded is None  # a bad record says nothing about the store
    store_rig.backend.unstorable = set()
    store_rig.receive("A", "B", "BAD")  # announced again: tried again, and it lands
    store_rig.settle()
    assert store_rig.stored() == store_rig.in_memory() == {"A", "B", "BAD", "C", "D"}
    assert store_rig.heard[-1] == "new BAD"


def test_a_change_the_store_cannot_take_left_memory_ahead_of_the_disk(
        store_rig: StoreRig) -> None:
    """An unstorable new version of a stored session: memory goes back to the stored
    version, so the API, events and a restart all show version 1."""
    store_rig.receive("A")
    store_rig.settle()
    store_rig.backend.unstorable = {"A2"}
    store_rig.receive("A2", version=2)
    store_rig.settle()
    (record,) = store_rig.hub.engine.records()
    assert (record.name, record.version) == ("A", 1)
    assert store_rig.stored() == {"A"}
    assert store_rig.heard == ["new A"]


def test_sessions_heard_while_the_disk_was_full_were_lost_for_good(
        store_rig: StoreRig) -> None:
    """A batch refused for a full disk was dropped: its sessions stayed in memory and
    never reached the directory. Now it waits, first in line, later batches join it,
    health says degraded, and once space is back everything lands in order."""
    store_rig.receive("A")
    store_rig.settle()
    store_rig.backend.disk_full = True
    store_rig.receive("B", "C", first=2)
    store_rig.settle(lambda: store_rig.hub.failures["disk_full"] >= 3)
    store_rig.receive("D", first=4)
    on_datagram = store_rig.hub.datagram_handler()
    on_datagram(heard(delete(session=1)))
    store_rig.hub.after_batch()
    store_rig.settle(lambda: store_rig.hub.failures["disk_full"] >= 6)
    assert store_rig.hub.degraded == "disk_full"
    assert store_rig.stored() == {"A"} and store_rig.heard == ["new A"]
    store_rig.backend.disk_full = False
    store_rig.settle()
    assert store_rig.stored() == store_rig.in_memory() == {"B", "C", "D"}
    assert store_rig.heard == ["new A", "new B", "new C", "new D", "deleted A"]
    assert store_rig.hub.degraded is None
    assert store_rig.hub.failures["undone"] == 0


def test_a_local_commit_waits_out_a_full_disk(store_rig: StoreRig) -> None:
    """A local announcement made while the disk is full is answered once it is durable
    (not refused and left in memory as a phantom)."""
    store_rig.backend.disk_full = True
    record = SessionRecord("L1", "10.0.0.9", "x 1 IN IP4 10.0.0.9", 1, 7, "10.0.0.9", "L",
                           None, "v=0\r\n", "", "", 0.0, 0.0, local=True)
    store_rig.hub.engine.put_local(record, store_rig.hub.clock.now())
    task = store_rig.hub.loop.create_task(store_rig.hub.commit())
    store_rig.settle(lambda: store_rig.hub.failures["disk_full"] >= 2)
    assert not task.done()
    store_rig.backend.disk_full = False
    store_rig.settle(task.done)
    assert task.result() is None and store_rig.stored() == {"L"}
