"""Events that can resume: ids, Last-Event-ID within the history, resync beyond it, and a
slow subscriber that gets a resync where it used to be disconnected without a word."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sapd.eventlog import RESYNC, Entry, EventLog, Subscription


def publish(log: EventLog, n: int) -> Entry:
    return log.publish("new", lambda: {"event": "new", "id": f"s{n}"})


def drain(subscription: Subscription) -> list[Entry | str]:
    async def take() -> list[Entry | str]:
        out: list[Entry | str] = []
        while subscription.pending:
            got = await subscription.next()
            assert got is not None
            out.append(got)
        return out
    return asyncio.run(take())


def ids(entries: list[Entry | str]) -> list[str]:
    return [json.loads(e.data)["id"] if isinstance(e, Entry) else e for e in entries]


def test_every_event_has_an_id_of_this_run_in_order() -> None:
    log = EventLog(run="r1")
    sub = log.subscribe()
    first, second = publish(log, 1), publish(log, 2)
    assert (first.event_id, second.event_id) == ("r1-1", "r1-2")
    assert json.loads(second.data) == {"event": "new", "id": "s2", "event_id": "r1-2"}
    assert ids(drain(sub)) == ["s1", "s2"]


def test_last_event_id_within_history_replays_what_followed() -> None:
    log = EventLog(history=10, run="r1")
    for n in range(1, 6):
        publish(log, n)
    assert ids(drain(log.subscribe("r1-3"))) == ["s4", "s5"]
    assert ids(drain(log.subscribe("r1-5"))) == []


def test_last_event_id_older_than_history_or_of_another_run_starts_with_resync() -> None:
    log = EventLog(history=3, run="r2")
    for n in range(1, 11):
        publish(log, n)
    assert ids(drain(log.subscribe("r2-2"))) == [RESYNC]
    assert ids(drain(log.subscribe("r1-9"))) == [RESYNC]  # a previous run's id
    assert ids(drain(log.subscribe("garbage"))) == [RESYNC]
    assert ids(drain(log.subscribe("r2-7"))) == ["s8", "s9", "s10"]


def test_slow_subscriber_gets_resync_instead_of_silent_disconnect() -> None:
    log = EventLog(queue=5, run="r1")
    slow = log.subscribe()
    for n in range(1, 9):
        publish(log, n)
    got = drain(slow)
    assert ids(got) == [RESYNC, "s7", "s8"]  # told it missed some, then carries on
    assert log.subscribers == 1 and log.resyncs == 1


def test_events_are_serialised_once_and_only_when_read() -> None:
    made = []

    def make() -> dict[str, Any]:
        made.append(1)
        return {"event": "new", "id": "x"}
    log = EventLog(run="r1")
    entry = log.publish("new", make)
    assert made == []
    assert entry.data is entry.data and made == [1]


def test_close_ends_every_subscription() -> None:
    log = EventLog(run="r1")
    sub = log.subscribe()
    log.close()
    assert asyncio.run(sub.next()) is None and log.subscribers == 0
