"""The hub with a real engine, a fake clock and an in-memory writer: durable, then heard."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from sapd.hub import Done, Hub
from sapd.lifecycle import Engine
from sapd.plumbing.clock import SteadyClock
from sapd.records import Writes
from sapd.store.sqlite import SqliteDirectory
from tests.packets import announce, sdp_text


@dataclass
class FakeTime:
    wall_now: float = 1_800_000_000.0
    monotonic_now: float = 1000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.monotonic_now


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
        # what recvmsg returns: data, ancillary data, flags, sender
        on_datagram((announce(sdp_text(session=n, name=name)), [], 0, ("10.0.0.1", 9875)))
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
