"""The announce service with a fake hub and a fake sender: publish, change and withdraw,
what is committed before an answer, what goes on the wire, and who may do what."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from sapd import wire
from sapd.announce.sender import IPAddress
from sapd.announce.service import Announcer, PublishError
from sapd.config import SapdConfig
from sapd.lifecycle import DROP_OWN, Engine
from sapd.plumbing.clock import SteadyClock
from sapd.plumbing.control import Peer
from sapd.plumbing.multicast import Interface
from sapd.records import DirectoryBackend, StoreFailure, Writes
from sapd.store.sqlite import SqliteDirectory
from sapd.store.writer import StoreError
from tests.packets import sdp_text

OWNER = Peer(pid=10, uid=1000, gid=1000, groups=(1000,))
STRANGER = Peer(pid=11, uid=2000, gid=2000, groups=(2000,))
T = TypeVar("T")
ETH0 = Interface(2, "eth0", up=True, multicast=True, loopback=False,
                 ipv4=("192.0.2.10",), ipv6=())


@dataclass
class FakeHub:
    """What the service needs of the hub: commit() records the engine's writes."""

    engine: Engine
    reader: DirectoryBackend
    loop: asyncio.AbstractEventLoop
    clock: SteadyClock
    committed: list[Writes] = field(default_factory=list)
    refuse: bool = False
    cannot_take: bool = False  # as the hub says of a record the store cannot hold

    async def commit(self) -> None:
        writes = self.engine.take_writes()
        while self.engine.next_event() is not None:
            pass
        if self.refuse:
            raise StoreError("disk full")
        if self.cannot_take:
            for sid in writes.upserts:
                self.engine.revert(sid, None)
            raise StoreFailure("the store cannot take session x: Python int too large to "
                               "convert to SQLite INTEGER", "unstorable_value", transient=False)
        self.committed.append(writes)


@dataclass
class FakeSender:
    sent: list[tuple[bytes, str, int, int, int]] = field(default_factory=list)
    closed: bool = False

    def send(self, data: bytes, group: IPAddress, port: int, ifindex: int, ttl: int,
             source: str | None = None) -> None:
        self.sent.append((data, str(group), port, ifindex, ttl))

    def close(self) -> None:
        self.closed = True


@dataclass
class Rig:
    announcer: Announcer
    hub: FakeHub
    sender: FakeSender

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.hub.loop.run_until_complete(coroutine)

    def settle(self) -> None:
        """Let due sends fire (a new announcement's first send is due at once)."""
        self.hub.loop.run_until_complete(asyncio.sleep(0.01))


@pytest.fixture
def rig() -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    hub = FakeHub(Engine(), SqliteDirectory(":memory:"), loop, SteadyClock())
    sender = FakeSender()
    announcer = Announcer(hub, sender, SapdConfig())
    announcer.set_interfaces([ETH0])
    yield Rig(announcer, hub, sender)
    loop.run_until_complete(announcer.shutdown())
    loop.close()


def test_publish_commits_before_it_answers_then_sends(rig: Rig) -> None:
    record = rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid))
    assert [r.name for w in rig.hub.committed for r in w.upserts.values()] == ["Studio"]
    assert record.local and record.owner_uid == OWNER.uid
    rig.settle()
    ((data, group, port, ifindex, ttl),) = rig.sender.sent
    assert (group, port, ifindex, ttl) == ("239.255.255.255", 9875, ETH0.index, 255)
    packet = wire.decode(data)
    assert not packet.deletion and b"s=Studio" in packet.payload
    assert packet.source == ipaddress.ip_address("192.0.2.10")


def test_own_packets_are_not_listed_twice(rig: Rig) -> None:
    rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid))
    rig.settle()
    assert rig.hub.engine.receive_datagram(rig.sender.sent[0][0], 1.0) == DROP_OWN


def test_a_refused_commit_announces_nothing(rig: Rig) -> None:
    rig.hub.refuse = True
    with pytest.raises(StoreError):
        rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid))
    rig.settle()
    assert rig.sender.sent == [] and rig.announcer.count() == 0


def test_a_session_the_store_cannot_take_was_an_untyped_500(rig: Rig) -> None:
    """The hub undoes a record the store cannot hold and says so; the service used to let
    that escape as an HTTP 500. Now it is a 422 naming the reason, nothing is announced,
    and the same SDP may be tried again (no phantom 409)."""
    rig.hub.cannot_take = True
    for _ in range(2):
        with pytest.raises(PublishError) as info:
            rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid))
        assert info.value.status == 422 and "unstorable_value" in str(info.value)
    rig.settle()
    assert rig.sender.sent == [] and rig.announcer.count() == 0


def test_invalid_sdp_is_refused_with_its_errors_and_stores_nothing(rig: Rig) -> None:
    with pytest.raises(PublishError) as info:
        rig.run(rig.announcer.publish("v=0\r\ns=no origin\r\n", {}, OWNER.uid))
    assert info.value.status == 400 and info.value.errors
    assert rig.hub.committed == []


def test_the_same_session_twice_is_a_conflict(rig: Rig) -> None:
    rig.run(rig.announcer.publish(sdp_text(), {}, OWNER.uid))
    with pytest.raises(PublishError) as info:
        rig.run(rig.announcer.publish(sdp_text(), {}, OWNER.uid))
    assert info.value.status == 409


def test_an_unknown_scope_names_the_known_ones(rig: Rig) -> None:
    with pytest.raises(PublishError, match="scope 'nowhere' is not configured; known: "):
        rig.run(rig.announcer.publish(sdp_text(), {"scope": "nowhere"}, OWNER.uid))


def test_only_the_owner_may_withdraw_and_withdrawal_sends_deletions(rig: Rig) -> None:
    record = rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid))
    sid = record.id
    rig.settle()
    with pytest.raises(PublishError) as info:
        rig.run(rig.announcer.withdraw(sid, STRANGER))
    assert info.value.status == 403
    rig.run(rig.announcer.withdraw(sid, OWNER))
    assert rig.hub.committed[-1].deletes == {sid}
    rig.settle()
    assert wire.decode(rig.sender.sent[-1][0]).deletion
    assert rig.announcer.count() == 0


def test_update_raises_the_version_for_the_caller(rig: Rig) -> None:
    record = rig.run(rig.announcer.publish(sdp_text(name="Studio"), {}, OWNER.uid))
    sid = record.id
    changed = rig.run(rig.announcer.update(sid, sdp_text(name="Studio B"), {}, OWNER))
    assert changed.version == 2 and changed.name == "Studio B"
    assert [r.name for r in rig.hub.committed[-1].upserts.values()] == ["Studio B"]


def test_shutdown_closes_the_sender(rig: Rig) -> None:
    rig.run(rig.announcer.shutdown())
    assert rig.sender.closed
