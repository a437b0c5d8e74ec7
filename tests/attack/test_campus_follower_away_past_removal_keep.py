"""A site's follower away for longer than other sites' removals are kept: found by
cutting one site off the database for longer than REMOVED_KEPT (10 minutes) while
another site withdrew sessions.

Removals are kept in sapd_removed for REMOVED_KEPT seconds, then pruned. A follower
that came back after that read on from the change numbers it had seen, found no
removal, and said nothing: /v1/events subscribers at that site never heard that those
sessions left and kept them for good (the listing, read from the database, had them
gone). The pruning docstring promised a resync; there was none. Now a follower that
has not looked for BEHIND seconds tells every subscriber to re-read (``resync``),
and so is a subscriber that resumes from an event before that point.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sapd.eventlog import RESYNC, EventLog
from sapd.lifecycle import Event
from sapd.store.campus import CampusFollower
from sapd.store.postgresql import PostgresDirectory
from tests.contract.test_directory_backend import record
from tests.postgres import PostgresDatabase
from tests.support import wait_for


class CutOff:
    """A feed that fails every use while ``down`` (the site's link to the database)."""

    def __init__(self, feed: PostgresDirectory, link: dict[str, bool]) -> None:
        self._feed, self._link = feed, link

    def __getattr__(self, name: str) -> Any:
        if self._link["down"] and name != "close":
            raise OSError("no route to the database")
        return getattr(self._feed, name)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


def test_follower_back_after_removals_were_pruned_tells_subscribers_to_resync(
        postgres_database: PostgresDatabase, loop: asyncio.AbstractEventLoop) -> None:
    east = PostgresDirectory(postgres_database.dsn, "east")
    log = EventLog(run="r")
    subscription = log.subscribe()
    link = {"down": False}

    def publish(events: list[Event]) -> None:
        for event in events:
            log.publish(event.kind, event.to_json)

    follower = CampusFollower(
        lambda: CutOff(PostgresDirectory(postgres_database.dsn, "west"), link),  # type: ignore[arg-type, return-value]
        publish, loop, log.resync)
    follower.behind_after = 2.0  # REMOVED_KEPT / 2 in production: 300 s
    follower.start()
    try:
        wait_for(lambda: follower.state == "following", 10, what="the follower")
        session = record(1)
        east.upsert([session])
        wait_for(lambda: subscription.pending >= 1, 10, what="the new session's event")
        last_id = f"r-{log.seq}"
        link["down"] = True
        east.delete([session.id])
        postgres_database.sql("DELETE FROM sapd_removed")  # pruned, as after 10 min
        time.sleep(follower.behind_after + 1.5)
        link["down"] = False
        wait_for(lambda: follower.resyncs >= 1, 10, what="a resync after the time away")
        wait_for(lambda: subscription.pending >= 2, 5, what="the resync reaching a subscriber")
        queued = [asyncio.run(subscription.next(0)) for _ in range(subscription.pending)]
        assert queued[-1] == RESYNC
        assert log.since(last_id) == [RESYNC]  # a subscriber resuming from before, too
    finally:
        follower.close()
        east.close()
