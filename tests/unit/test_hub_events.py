"""The hub's subscribers: a slow one is told to resync instead of being dropped without
a word, and one that reconnects with its last event id misses nothing."""

from __future__ import annotations

import asyncio
import json

from sapd import eventlog
from sapd.eventlog import RESYNC, Entry
from sapd.hub import Hub
from sapd.lifecycle import Engine
from sapd.store.sqlite import SqliteDirectory
from tests.packets import announce, sdp_text
from tests.support import FakeTime
from tests.unit.test_hub import MemoryWriter, heard


def hub_with(queue: int) -> tuple[Hub, MemoryWriter, asyncio.AbstractEventLoop]:
    from sapd.plumbing.clock import SteadyClock  # noqa: PLC0415

    loop = asyncio.new_event_loop()
    fake, writer = FakeTime(), MemoryWriter()
    hub = Hub(Engine(), SqliteDirectory(":memory:"), writer, loop,
              SteadyClock(fake.wall, fake.monotonic), flush_delay=0.0)
    hub.events = eventlog.EventLog(queue=queue, run="t")
    return hub, writer, loop


def hear(hub: Hub, writer: MemoryWriter, first: int, count: int) -> None:
    on_datagram = hub.datagram_handler()
    for n in range(first, first + count):
        on_datagram(heard(announce(sdp_text(session=n, name=f"s{n}"))))
    hub.after_batch()
    while writer.batches:
        writer.answer()


def names(loop: asyncio.AbstractEventLoop, subscription: eventlog.Subscription) -> list[str]:
    async def take() -> list[str]:
        out = []
        while subscription.pending:
            got = await subscription.next()
            out.append(json.loads(got.data)["session"]["name"] if isinstance(got, Entry)
                       else str(got))
        return out
    return loop.run_until_complete(take())


def test_slow_subscriber_was_disconnected_and_lost_events_silently() -> None:
    hub, writer, loop = hub_with(queue=3)
    slow = hub.subscribe()
    hear(hub, writer, 1, 5)
    assert hub.subscribers == 1  # still subscribed
    # told where it missed events (s1 to s4: a re-read of the directory shows them),
    # then it carries on
    assert names(loop, slow) == [RESYNC, "s5"]
    hear(hub, writer, 6, 1)
    assert names(loop, slow) == ["s6"]
    loop.close()


def test_reconnect_with_last_event_id_gets_what_followed() -> None:
    hub, writer, loop = hub_with(queue=100)
    hear(hub, writer, 1, 4)
    again = hub.subscribe(last_event_id="t-2")
    assert names(loop, again) == ["s3", "s4"]
    loop.close()
