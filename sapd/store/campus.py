"""Other sites' changes to a shared directory, heard here: a thread that LISTENs.

Each site's commits NOTIFY (sapd.store.postgresql); this thread waits for them on a
connection of its own and reads what changed since the change numbers it has seen
(one snapshot), so a session committed by another site is an event here within a round
trip of its commit. A notification only says when to look, so a lost one (a reconnect)
costs nothing: it also looks every POLL seconds. Reads of the API need none of this: they
read the database, where another site's session is listed the moment it commits.

LISTEN/NOTIFY rather than polling alone: polling within 1 s of every commit means a
query a second per sapd forever, and latency of half the interval on average; a
notification costs nothing while the directory is quiet.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from sapd.lifecycle import Event
from sapd.plumbing import logs
from sapd.store.postgresql import REMOVED_KEPT, Change, PostgresDirectory

log = logs.get("sapd.campus")

POLL = 1.0  # seconds between looks without a notification
RETRY = 1.0  # seconds between attempts to reach the database again
# Seconds between two looks after which other sites' removals may have been pruned
# (sapd_removed keeps them REMOVED_KEPT, by the database's clock): subscribers are
# then told to re-read the directory, since no event will say those sessions left.
BEHIND = REMOVED_KEPT / 2


class CampusFollower:
    def __init__(self, open_feed: Callable[[], PostgresDirectory],
                 publish: Callable[[list[Event]], None],
                 loop: asyncio.AbstractEventLoop,
                 resync: Callable[[], None] | None = None) -> None:
        self._open_feed = open_feed
        self._publish = publish
        self._resync = resync or (lambda: None)
        self.behind_after = BEHIND
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sapd-campus", daemon=True)
        self.heard = 0  # events of other sites published
        self.state = "starting"  # following, or down while the database is away
        self.outages = 0  # times it went down
        self.resyncs = 0  # times it was away long enough to have missed removals

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=POLL + 5)

    def _run(self) -> None:
        feed: PostgresDirectory | None = None
        seen: dict[str, int] | None = None
        last_look = time.monotonic()
        while not self._stop.is_set():
            try:
                if feed is None:
                    feed = self._open_feed()
                    feed.listen()
                    if seen is None:
                        seen = feed.watermarks()  # what is there now is no news
                        last_look = time.monotonic()
                    self.state = "following"
                feed.wait(POLL)
                seen, changes = feed.changes_since(seen or {})
                looked = time.monotonic()
                away, last_look = looked - last_look, looked
                if changes:
                    self._loop.call_soon_threadsafe(self._publish, _events(changes))
                    self.heard += len(changes)
                if away > self.behind_after:
                    log.warning("other sites' removals may have been missed while away; "
                                "event subscribers re-read the directory",
                                away_s=round(away, 1))
                    self.resyncs += 1
                    self._loop.call_soon_threadsafe(self._resync)
            except Exception as exc:  # the database is away: look again soon
                if self.state != "down":
                    log.warning("cannot follow other sites' changes", error=str(exc))
                    self.outages += 1
                self.state = "down"
                if feed is not None:
                    feed.close()
                    feed = None
                self._stop.wait(RETRY)
        if feed is not None:
            feed.close()


def _events(changes: list[Change]) -> list[Event]:
    now = time.time()
    return [Event(kind, record.id, record.last_seen if kind in ("new", "changed") else now,
                  record) for kind, record in changes]
