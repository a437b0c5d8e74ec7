"""The store process: nothing handed to it is lost, whatever happens to it or to sapd."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from sapd.plumbing import service
from sapd.records import Writes
from sapd.store.sqlite import SqliteDirectory
from sapd.store.writer import StoreError, StoreWriter
from tests.daemons import send_local_multicast
from tests.packets import announce, sdp_text
from tests.support import children, wait_for
from tests.unit.test_store_sqlite import record


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def outcomes_of(loop: asyncio.AbstractEventLoop, expected: int,
                outcomes: list[BaseException | None]) -> None:
    """Run the loop until every batch's callback has been called."""
    async def until_all() -> None:
        while len(outcomes) < expected:
            await asyncio.sleep(0.01)
    loop.run_until_complete(asyncio.wait_for(until_all(), 10))


@pytest.fixture
def loop() -> Any:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def new_writer(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> tuple[Path, StoreWriter]:
    """A store writer on a new directory file, as the daemon starts one."""
    path = tmp_path / "directory.sqlite3"
    SqliteDirectory(path).close()
    return path, StoreWriter(path, loop)


def test_a_killed_store_process_is_replaced_and_every_batch_lands(
        tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    path, writer = new_writer(tmp_path, loop)
    outcomes: list[BaseException | None] = []
    killed = []
    for batch in range(60):
        writes = Writes({r.id: r for r in (record(batch * 100 + n) for n in range(100))})
        if batch and batch % 7 == 0:  # and deletes, so order matters after a resend
            writes.deletes.add(record((batch - 7) * 100).id)
        writer.submit(writes, outcomes.append)
        if batch in (20, 45):
            wait_for(lambda: writer.pid not in killed, 5, what="the next store process")
            killed.append(writer.pid)
            os.kill(writer.pid, signal.SIGKILL)
    outcomes_of(loop, 60, outcomes)
    writer.close()
    assert outcomes == [None] * 60
    assert writer.restarts == 2, writer.restarts
    assert [gone(pid) for pid in killed] == [True, True], killed
    stored = SqliteDirectory(path)
    deleted = {record((b - 7) * 100).id for b in range(7, 60, 7)}
    assert stored.count() == 6000 - len(deleted)
    assert all(stored.get(sid) is None for sid in deleted)


def test_a_batch_the_store_refuses_is_reported_and_the_next_one_lands(
        tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    path, writer = new_writer(tmp_path, loop)
    outcomes: list[BaseException | None] = []
    broken = record(1, name=None)  # NOT NULL in the table
    writer.submit(Writes({broken.id: broken}), outcomes.append)
    outcomes_of(loop, 1, outcomes)  # on its own, not folded with the next
    writer.submit(Writes({"s00002": record(2)}), outcomes.append)
    outcomes_of(loop, 2, outcomes)
    writer.close()
    assert isinstance(outcomes[0], StoreError) and "NOT NULL" in str(outcomes[0])
    assert outcomes[1] is None and writer.restarts == 0
    stored = SqliteDirectory(path)
    assert stored.get("s00002") is not None and stored.get(broken.id) is None


def test_sigkilled_sapd_leaves_no_store_process_and_a_second_one_is_refused(
        sapd_factory: Any) -> None:
    daemon = sapd_factory().start()
    assert daemon.proc is not None
    (store_pid,) = children(daemon.proc.pid)
    with pytest.raises(service.StateInUse, match="in use by another daemon"):
        service.lock_state(daemon.state, wait=0.2)
    send_local_multicast(announce(sdp_text(name="kept")))
    wait_for(daemon.sessions, 5, what="the session")
    started = time.monotonic()
    daemon.kill()
    wait_for(lambda: gone(store_pid), 5, what="the store process to leave")
    print(f"store process gone {time.monotonic() - started:.3f} s after SIGKILL")
    os.close(service.lock_state(daemon.state, wait=0.2))  # free again
    daemon.start()
    assert [s["name"] for s in daemon.sessions()] == ["kept"]


def test_sapd_replaces_a_killed_store_process_and_says_so(sapd: Any) -> None:
    assert sapd.proc is not None
    (store_pid,) = children(sapd.proc.pid)
    os.kill(store_pid, signal.SIGKILL)
    wait_for(lambda: children(sapd.proc.pid) not in ([], [store_pid]), 5,
             what="another store process")
    for i in range(3):
        send_local_multicast(announce(sdp_text(session=i, name=f"after {i}")))
    wait_for(lambda: len(sapd.sessions()) == 3, 10, what="3 sessions stored")

    def metrics() -> str:
        return str(sapd.client.request("GET", "/metrics").body.decode())
    # Rows are visible once committed, the acknowledgement reaches the daemon a moment
    # later: reading the backlog at once was this test's flake under load.
    wait_for(lambda: "sapd_store_backlog 0" in metrics(), 5, what="an empty backlog")
    assert "sapd_store_restarts_total 1" in metrics()
    assert 'sapd_store_failures_total{reason="store_process"} 1' in metrics()
    assert "store process ended; starting another" in sapd.logs()
