"""The seam where a lease change becomes durable, then heard (madcap/hub.py): what a
refused or failed commit means. A real SQLite store; the failing one wraps it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from madcap import wire
from madcap.hub import LeaseHub
from madcap.leases import ACTIVE, COMMITTED, Lease, LeaseStoreError
from madcap.pool import scope_from_config
from madcap.server import MadcapServer, ServerSettings
from madcap.wire import Message, MsgType
from tests.madcap_harness import FailingStore

T0 = 1_800_000_000.0
SERVER = ipaddress.IPv4Address("10.0.0.1")
CLIENT = "10.0.0.9:40000"
SCOPE = scope_from_config({"name": "small", "range": "239.255.0.0/16",
                           "pool": "239.255.0.1-239.255.0.4", "lease_default": 600}, 0)
SCOPE_ID = ipaddress.IPv4Address("239.255.0.0")


def setup(tmp_path: Path) -> tuple[MadcapServer, FailingStore, LeaseHub[str]]:
    store = FailingStore(tmp_path / "leases.sqlite3")
    server = MadcapServer([SCOPE], store.load(T0), T0, ServerSettings(guard=10.0),
                          cache=store.reply_cache())
    return server, store, LeaseHub(server, store)


def lid(n: int) -> bytes:
    return b"\0" + n.to_bytes(16, "big")


def exchange(hub: LeaseHub[str], msg: Message | bytes, now: float = T0) -> Message | None:
    data = msg if isinstance(msg, bytes) else wire.encode(msg)
    hub.receive(data, CLIENT, SERVER, now, CLIENT)
    sent = hub.flush()
    return wire.decode(sent[0][0]) if sent else None


def request(n: int, xid: int = 1) -> Message:
    return Message(msgtype=MsgType.REQUEST, xid=xid, lease_id=lid(n), scope=SCOPE_ID)


def addresses(msg: Message | None) -> list[str]:
    assert msg is not None and msg.msgtype == MsgType.ACK, msg
    return [str(a) for r in msg.address_ranges or () for a in r.addresses()]


def test_a_lease_refused_by_the_store_gets_no_ack_and_its_retransmission_a_free_address(
        tmp_path: Path) -> None:
    server, store, hub = setup(tmp_path)
    # another server on the same database took 239.255.0.1 after this one loaded
    other = Lease(lid(99), "small", ("239.255.0.1",), T0, T0 + 600, ACTIVE, "10.0.0.8:1",
                  T0, T0 + 610)
    store.commit([other])
    raw = wire.encode(request(1))
    assert exchange(hub, raw) is None  # the store refused it: never an ACK
    assert server.counters["refused"] == 1 and server.counters["replies_dropped"] == 1
    assert lid(1) not in server.leases and lid(99) in server.leases  # now known here
    again = exchange(hub, raw, T0 + 4)  # the client's retransmission, byte-identical
    # another address, found from a random place (not the other server's next one)
    (address,) = addresses(again)
    assert address != "239.255.0.1"
    assert server.counters["acks"] == 1 and server.counters["retransmissions"] == 0
    assert store.get(lid(1)) is not None


def test_a_failed_commit_undoes_a_renewal_and_the_retransmission_renews(
        tmp_path: Path) -> None:
    server, store, hub = setup(tmp_path)
    assert addresses(exchange(hub, request(1)))
    first_end = server.leases[lid(1)].end
    store.full = True
    renew = wire.encode(Message(msgtype=MsgType.RENEW, xid=2, lease_id=lid(1),
                                lease_time=3000))
    assert exchange(hub, renew, T0 + 10) is None
    assert server.leases[lid(1)].end == first_end  # memory tells what the disk holds
    assert server.scope_counters["small"]["renewed"] == 0  # counters too
    assert hub.health is not None and "disk_full" in hub.health
    assert hub.failures["disk_full"] == 1
    store.full = False
    renewed = exchange(hub, renew, T0 + 12)
    assert renewed is not None and renewed.lease_time == 3000
    assert store.get(lid(1)) == server.leases[lid(1)] and hub.health is None
    assert server.counters["acks"] == 2


def test_a_failed_commit_undoes_a_release_and_an_expiry(tmp_path: Path) -> None:
    server, store, hub = setup(tmp_path)
    assert addresses(exchange(hub, request(1)))
    assert addresses(exchange(hub, request(2, xid=5)))
    store.full = True
    release = Message(msgtype=MsgType.RELEASE, xid=3, lease_id=lid(1))
    assert exchange(hub, release, T0 + 1) is None
    hub.stage(server.expire(T0 + 601))
    hub.flush()
    assert set(server.leases) == {lid(1), lid(2)}  # neither the release nor the expiry
    assert server.scope_counters["small"]["released"] == 0
    assert server.scope_counters["small"]["expired"] == 0
    store.full = False
    hub.stage(server.expire(T0 + 602))
    hub.flush()
    assert not server.leases
    assert {store.get(lid(n)).state for n in (1, 2)} == {"expired"}  # type: ignore[union-attr]


def test_a_failed_commit_sends_the_replies_that_need_nothing_stored(tmp_path: Path) -> None:
    server, store, hub = setup(tmp_path)
    store.full = True
    info = Message(msgtype=MsgType.GETINFO, xid=7, lease_id=lid(5), option_request=(9,))
    hub.receive(wire.encode(request(1)), CLIENT, SERVER, T0, "a")
    hub.receive(wire.encode(info), CLIENT, SERVER, T0, "b")
    sent = hub.flush()
    assert [to for _, to in sent] == ["b"]  # the GETINFO's answer; the REQUEST's is held
    assert server.counters["acks"] == 1 and server.counters["replies_dropped"] == 1


def quota_setup(tmp_path: Path) -> tuple[MadcapServer, FailingStore, LeaseHub[str]]:
    """A scope in which one host may hold two addresses."""
    store = FailingStore(tmp_path / "leases.sqlite3")
    scope = scope_from_config({"name": "small", "range": "239.255.0.0/16",
                               "pool": "239.255.0.1-239.255.0.8", "lease_default": 600,
                               "max_addresses_per_client": 2}, 0)
    server = MadcapServer([scope], store.load(T0), T0, ServerSettings(guard=10.0),
                          cache=store.reply_cache())
    return server, store, LeaseHub(server, store)


def test_addresses_of_leases_the_store_refused_stayed_charged_to_the_host(
        tmp_path: Path) -> None:
    # A failed commit undoes the leases, so their addresses must not count against the
    # host's quota: else two refusals lock the host out although it holds nothing.
    server, store, hub = quota_setup(tmp_path)
    store.full = True
    assert exchange(hub, request(1)) is None
    assert exchange(hub, request(2, xid=2)) is None
    store.full = False
    assert addresses(exchange(hub, request(3, xid=3), T0 + 1))
    assert addresses(exchange(hub, request(4, xid=4), T0 + 1))
    nak = exchange(hub, request(5, xid=5), T0 + 1)  # now it holds two: the quota holds
    assert nak is not None and nak.msgtype == MsgType.NAK
    assert server.counters["client_address_quota"] == 1


def test_an_offer_that_became_a_refused_lease_stayed_charged_to_the_host(
        tmp_path: Path) -> None:
    _, store, hub = quota_setup(tmp_path)
    offer = exchange(hub, Message(msgtype=MsgType.DISCOVER, xid=1, lease_id=lid(1),
                                  scope=SCOPE_ID, num_addresses=(2, 2)))
    assert offer is not None and offer.msgtype == MsgType.OFFER
    store.full = True
    assert exchange(hub, Message(msgtype=MsgType.REQUEST, xid=2, lease_id=lid(1),
                                 scope=SCOPE_ID, server_id=SERVER)) is None
    store.full = False
    # the offer went with the refused lease: the host holds nothing and may take two
    again = exchange(hub, Message(msgtype=MsgType.REQUEST, xid=3, lease_id=lid(2),
                                  scope=SCOPE_ID, num_addresses=(2, 2)), T0 + 1)
    assert len(addresses(again)) == 2


def test_a_refused_renewal_keeps_the_lease_charged_to_the_host(tmp_path: Path) -> None:
    # the undo restores the lease as it was, and with it its charge (not zero, not twice)
    _, store, hub = quota_setup(tmp_path)
    assert addresses(exchange(hub, request(1)))
    store.full = True
    assert exchange(hub, Message(msgtype=MsgType.RENEW, xid=2, lease_id=lid(1),
                                 lease_time=900), T0 + 1) is None
    store.full = False
    assert addresses(exchange(hub, request(2, xid=3), T0 + 2))
    nak = exchange(hub, request(3, xid=4), T0 + 2)
    assert nak is not None and nak.msgtype == MsgType.NAK


def test_a_lease_refused_for_another_servers_lease_is_not_charged_twice(
        tmp_path: Path) -> None:
    _, store, hub = quota_setup(tmp_path)
    other = Lease(lid(99), "small", ("239.255.0.1",), T0, T0 + 600, ACTIVE, "10.0.0.8:1",
                  T0, T0 + 610)
    store.commit([other])  # another server on the same database, for another host
    assert exchange(hub, request(1)) is None
    assert addresses(exchange(hub, request(1), T0 + 1)) != ["239.255.0.1"]
    assert addresses(exchange(hub, request(2, xid=2), T0 + 1))


def test_a_change_staged_while_a_failing_batch_was_written_goes_with_it(
        tmp_path: Path) -> None:
    # madcapd handles the next batch while one is being written (hub.take, the commit in
    # a thread, hub.settle). A renewal of a lease granted by the batch in flight is built
    # on it: when that commit fails, the renewal and its ACK go too, never to the store.
    server, store, hub = setup(tmp_path)
    hub.receive(wire.encode(request(1)), CLIENT, SERVER, T0, CLIENT)
    granting = hub.take()
    renew = Message(msgtype=MsgType.RENEW, xid=2, lease_id=lid(1), lease_time=900)
    hub.receive(wire.encode(renew), CLIENT, SERVER, T0 + 1, CLIENT)  # staged on top
    store.full = True
    try:
        store.commit(granting.leases)
    except LeaseStoreError as exc:
        assert hub.settle(granting, exc) == []  # no ACK for the grant
    store.full = False
    renewing = hub.take()
    assert renewing.leases == [] and hub.settle(renewing, COMMITTED) == []  # nor for it
    assert lid(1) not in server.leases and store.get(lid(1)) is None
    assert server.counters["replies_dropped"] == 2 and server.counters["acks"] == 0
    assert server.pools["small"].windows == {}  # no address held for it
    # the client's retransmission of the REQUEST is answered afresh, and made durable
    assert len(addresses(exchange(hub, request(1), T0 + 4))) == 1
    assert store.get(lid(1)) is not None


def test_a_batch_written_while_the_next_is_handled_settles_on_its_own(
        tmp_path: Path) -> None:
    server, store, hub = setup(tmp_path)
    hub.receive(wire.encode(request(1)), CLIENT, SERVER, T0, CLIENT)
    first = hub.take()
    hub.receive(wire.encode(request(2)), CLIENT, SERVER, T0 + 0.001, CLIENT)
    assert len(hub.settle(first, store.commit(first.leases))) == 1  # the first one's ACK
    second = hub.take()
    store.full = True  # the second batch's commit fails
    try:
        store.commit(second.leases)
    except LeaseStoreError as exc:
        assert hub.settle(second, exc) == []
    assert lid(1) in server.leases and lid(2) not in server.leases  # only the second undone
    assert store.get(lid(1)) is not None and store.get(lid(2)) is None
    assert hub.failures == {"disk_full": 1}


def test_an_offer_waits_for_no_commit_and_a_reply_about_a_lease_in_flight_does(
        tmp_path: Path) -> None:
    # An OFFER of free addresses promises nothing durable: it goes at once, while a
    # batch is being written (an exchange no longer waits for two commits). A reply
    # about a lease whose change is on its way to the store waits for that commit.
    server, store, hub = setup(tmp_path)
    hub.receive(wire.encode(request(1)), CLIENT, SERVER, T0, CLIENT)
    granting = hub.take()  # lease 1 on its way to the store
    discover = Message(msgtype=MsgType.DISCOVER, xid=3, lease_id=lid(2), scope=SCOPE_ID)
    hub.receive(wire.encode(discover), CLIENT, SERVER, T0 + 0.001, CLIENT)
    again = Message(msgtype=MsgType.REQUEST, xid=4, lease_id=lid(1), scope=SCOPE_ID)
    hub.receive(wire.encode(again), CLIENT, SERVER, T0 + 0.002, CLIENT)  # lease 1 again
    ready = hub.ready()
    assert [wire.decode(data).msgtype for data, _ in ready] == [MsgType.OFFER]
    assert server.counters["offers"] == 1 and server.counters["acks"] == 0
    assert len(hub.settle(granting, store.commit(granting.leases))) == 1  # its ACK
    assert hub.ready() == [] and len(hub.flush()) == 1  # the second ACK, after it
    assert server.counters["acks"] == 2


def test_a_retransmission_for_a_settled_lease_waits_for_no_commit(tmp_path: Path) -> None:
    # the hub kept every lease id it ever committed as "unsettled" (a set growing by
    # one per lease for ever), so later replies about them waited for a commit
    _, _, hub = setup(tmp_path)
    raw = wire.encode(request(1))
    hub.receive(raw, CLIENT, SERVER, T0, CLIENT)
    acked = hub.flush()
    assert addresses(wire.decode(acked[0][0]))
    hub.receive(raw, CLIENT, SERVER, T0 + 1, CLIENT)  # the ACK was lost: the same again
    assert hub.ready() == acked
