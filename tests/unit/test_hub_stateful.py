"""Engine, hub and a real SQLite directory agree after any sequence of announcements,
changes, deletions, expiry, clock steps, store failures and restarts (issue 13, stateful property
tests). The only fake is at the store backend's boundary: a batch refused for a full
disk, or for a record it cannot hold (a name starting "bad"). After every step that
settles, the sessions in the engine, in the directory and in the events heard (replayed
from the directory as it stood at the last restart) are the same, version for version.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sapd.hub import Hub
from sapd.lifecycle import Engine, Event
from sapd.plumbing.clock import SteadyClock
from sapd.records import SessionRecord, StoreFailure
from sapd.store.sqlite import SqliteDirectory
from tests.packets import announce, delete, sdp_text
from tests.support import FakeTime
from tests.unit.test_hub import FaultyBackend, InProcessWriter, heard

SESSIONS = st.integers(1, 5)
VERSIONS = st.integers(1, 4)
SOURCES = st.sampled_from(["10.0.0.1", "10.0.0.2"])
Story = dict[str, tuple[int, str]]  # session id -> (version, name)


class BadNames(FaultyBackend):
    def apply(self, writes: object) -> None:
        for record in getattr(writes, "upserts", {}).values():
            if record.name.startswith("bad"):
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
        super().apply(writes)  # type: ignore[arg-type]


class EngineAndDirectoryAgree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.workdir = tempfile.TemporaryDirectory()
        self.path = Path(self.workdir.name) / "directory.sqlite3"
        self.loop = asyncio.new_event_loop()
        self.time = FakeTime()
        self.backend = BadNames(SqliteDirectory(self.path))
        self.heard: Story = {}
        self.hub = self._hub(Engine())

    def _hub(self, engine: Engine) -> Hub:
        hub = Hub(engine, self.backend.directory, InProcessWriter(self.backend, self.loop),
                  self.loop, SteadyClock(self.time.wall, self.time.monotonic),
                  flush_delay=0.0, retry_pauses=(0.0005,))
        hub.listeners.append(self._heard)
        return hub

    def _heard(self, event: Event) -> None:
        if event.kind in ("new", "changed"):
            self.heard[event.session_id] = (event.record.version, event.record.name)
        else:
            assert self.heard.pop(event.session_id, None) is not None, event

    def _settle(self) -> None:
        """Run the loop until every batch is committed, or a few retries when the disk
        is full (then nothing settles, and nothing is checked)."""
        async def wait() -> None:
            for _ in range(200 if not self.backend.disk_full else 5):
                if self.hub.pending == 0:
                    return
                await asyncio.sleep(0.001)
        self.loop.run_until_complete(wait())

    def _tick(self) -> None:
        """A real clock moves between any two events (the hub dates values made at the
        instant of a clock step's detection as made before it)."""
        self.time.monotonic_now += 0.001
        self.time.wall_now += 0.001

    def _receive(self, data: bytes, source: str) -> None:
        self._tick()
        self.hub.datagram_handler()(heard(data, source))
        self.hub.after_batch()
        self._settle()

    # -- what happens -----------------------------------------------------------------
    @rule(session=SESSIONS, version=VERSIONS, source=SOURCES,
          name=st.sampled_from(["one", "two", "bad"]))
    def announce(self, session: int, version: int, source: str, name: str) -> None:
        label = f"{name} {session}.{version}"
        self._receive(announce(sdp_text(session=session, version=version, name=label),
                               source=source), source)

    @precondition(lambda self: not self.backend.disk_full)  # else it waits, see test_hub
    @rule(session=SESSIONS, version=VERSIONS, name=st.sampled_from(["mine", "bad mine"]))
    def publish_locally(self, session: int, version: int, name: str) -> None:
        """The announce service's path: put_local, then an awaited commit, which raises
        for a record the store cannot take (and nothing of it is kept)."""
        label = f"{name} {session}.{version}"
        self._tick()
        now = self.hub.clock.now()  # the engine's clock, as the announce service's
        record = SessionRecord(f"local{session}", "10.0.0.9", f"- {session} IN IP4 10.0.0.9",
                               version, session, "10.0.0.9", label, None, "v=0\r\n", "",
                               "", now, now, local=True)
        self.hub.engine.put_local(record, now)
        commit = self.loop.create_task(self.hub.commit())
        self._settle()
        self.loop.run_until_complete(asyncio.wait([commit], timeout=1))
        error = commit.exception()
        assert isinstance(error, StoreFailure) == name.startswith("bad"), error

    @rule(session=SESSIONS, version=VERSIONS, source=SOURCES)
    def delete(self, session: int, version: int, source: str) -> None:
        self._receive(delete(session=session, version=version, source=source), source)

    @rule(seconds=st.sampled_from([1.0, 30.0, 600.0, 4 * 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.time.monotonic_now += seconds
        self.time.wall_now += seconds
        self.hub.after_batch()
        self.hub.flush_refreshes()
        self._settle()

    @rule(step=st.sampled_from([-7200.0, 3600.0]))
    def clock_steps(self, step: float) -> None:
        """The wall clock moves, elapsed time does not: nothing expires for it, and what
        is stored from now on follows the wall clock."""
        self._tick()
        self.time.wall_now += step
        sessions = len(self.hub.engine)
        self.hub.after_batch()
        self._settle()
        assert len(self.hub.engine) == sessions

    @rule()
    def disk_fills(self) -> None:
        self.backend.disk_full = True

    @rule()
    def disk_frees(self) -> None:
        self.backend.disk_full = False
        self._settle()

    @rule()
    def restart(self) -> None:
        """Stop (what the store still refuses is lost, and the log says so) and start
        again from what is on disk, as the daemon does."""
        self.hub.close()
        self.backend.directory = SqliteDirectory(self.path)
        self.backend.directory.mark_remote_stale()
        engine = Engine()
        engine.load(self.backend.directory.iter_all(light=True))
        self.hub = self._hub(engine)
        self.heard = self._story_on_disk()
        self.hub.after_batch()  # as the daemon starts: expire what is already due
        self._settle()

    # -- what must hold -----------------------------------------------------------------
    def _story_on_disk(self) -> Story:
        return {r.id: (r.version, r.name) for r in self.backend.directory.iter_all(light=True)}

    @invariant()
    def memory_disk_and_events_tell_one_story(self) -> None:
        if self.hub.pending:
            return  # the disk is full: writes are held, nothing is heard of them yet
        in_memory = {r.id: (r.version, r.name) for r in self.hub.engine.records()}
        assert in_memory == self._story_on_disk() == self.heard
        assert not any(name.startswith("bad") for _, name in in_memory.values())

    @precondition(lambda self: self.hub.pending > 0)
    @invariant()
    def held_writes_are_reported(self) -> None:
        assert self.hub.degraded == "disk_full"

    def teardown(self) -> None:
        self.backend.disk_full = False
        self._settle()
        self.hub.close()
        self.loop.close()
        self.workdir.cleanup()


# HUB_EXAMPLES=600 for a longer search by hand (~1 min); the default run takes ~7 s.
EngineAndDirectoryAgree.TestCase.settings = settings(
    max_examples=int(os.environ.get("HUB_EXAMPLES", "60")), stateful_step_count=30,
    deadline=None)
test_engine_and_directory_agree = EngineAndDirectoryAgree.TestCase
