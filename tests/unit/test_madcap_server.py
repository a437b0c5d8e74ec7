"""The allocator with a fake clock: every exchange and rule, on a real SQLite file."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from madcap import wire
from madcap.pool import PoolConfigError, check_overlaps, scope_from_config
from madcap.server import ServerSettings
from madcap.store.sqlite import SqliteLeaseStore
from madcap.wire import AddressRange, ErrorCode, Features, Message, MsgType, Opt
from tests.madcap_harness import Harness

SERVER = ipaddress.IPv4Address("10.0.0.1")
CLIENT = "10.0.0.9:40000"
T0 = 1_800_000_000.0
SMALL = {"name": "small", "range": "239.255.0.0/16", "pool": "239.255.0.1-239.255.0.4",
         "lease_default": 600, "lease_max": 3600,
         "names": [{"language": "en", "name": "Studio"}, {"language": "de", "name": "Studio DE",
                                                          "default": False}]}
SCOPE_ID = ipaddress.IPv4Address("239.255.0.0")


def make(tmp_path: Path, scope: dict[str, object] | None = None, now: float = T0,
         **settings: object) -> Harness:
    store = SqliteLeaseStore(tmp_path / "leases.sqlite3")
    cfg = scope_from_config(scope or SMALL, 0)
    return Harness([cfg], store, now, ServerSettings(**settings))  # type: ignore[arg-type]


def send(server: Harness, msg: Message, now: float = T0, client: str = CLIENT,
         multicast: bool = False) -> Message | None:
    raw = server.exchange(wire.encode(msg), client, SERVER, now, multicast)
    return wire.decode(raw) if raw is not None else None


def lid(n: int) -> bytes:
    return b"\x00" + n.to_bytes(16, "big")


def request(n: int, xid: int | None = None, **kw: object) -> Message:
    return Message(msgtype=MsgType.REQUEST, xid=xid if xid is not None else n, lease_id=lid(n),
                   scope=SCOPE_ID, **kw)  # type: ignore[arg-type]


def addresses(msg: Message | None) -> list[str]:
    assert msg is not None and msg.address_ranges is not None, msg
    return [str(a) for r in msg.address_ranges for a in r.addresses()]


def test_getinfo_lists_scopes_with_names_and_time(tmp_path: Path) -> None:
    s = make(tmp_path)
    ack = send(s, Message(msgtype=MsgType.GETINFO, xid=1, lease_id=lid(1),
                          option_request=(Opt.SCOPE_LIST, Opt.CURRENT_TIME)))
    assert ack is not None and ack.msgtype == MsgType.ACK and ack.server_id == SERVER
    (entry,) = ack.scope_list or ()
    assert entry.scope_id == SCOPE_ID and entry.last == ipaddress.IPv4Address("239.255.255.255")
    assert [n.name for n in entry.names] == ["Studio", "Studio DE"]
    assert ack.current_time == int(T0)
    de = send(s, Message(msgtype=MsgType.GETINFO, xid=2, lease_id=lid(1), option_request=(9,),
                         language="de"))
    assert de is not None and [n.name for n in de.scope_list[0].names] == ["Studio DE"]  # type: ignore[index]
    fr = send(s, Message(msgtype=MsgType.GETINFO, xid=3, lease_id=lid(1), option_request=(9,),
                         language="fr"))
    assert fr is not None and [n.name for n in fr.scope_list[0].names] == ["Studio"]  # type: ignore[index]
    bad = send(s, Message(msgtype=MsgType.GETINFO, xid=4, lease_id=lid(1)))
    assert bad is not None and bad.error is not None
    assert (bad.error.code, bad.error.option) == (ErrorCode.INVALID_REQUEST, Opt.OPTION_REQUEST)


def test_discover_offer_request_ack(tmp_path: Path) -> None:
    s = make(tmp_path)
    offer = send(s, Message(msgtype=MsgType.DISCOVER, xid=5, lease_id=lid(1), scope=SCOPE_ID),
                 multicast=True)
    assert offer is not None and offer.msgtype == MsgType.OFFER and offer.lease_time == 600
    ack = send(s, request(1, xid=6, server_id=SERVER), T0 + 1)
    assert ack is not None and ack.msgtype == MsgType.ACK
    assert addresses(ack) == addresses(offer)
    assert s.counters["discovers"] == 1 and s.counters["offers"] == 1


def test_request_naming_another_server_releases_the_offer(tmp_path: Path) -> None:
    s = make(tmp_path)
    send(s, Message(msgtype=MsgType.DISCOVER, xid=5, lease_id=lid(1), scope=SCOPE_ID))
    assert send(s, request(1, server_id=ipaddress.IPv4Address("10.0.0.2"))) is None
    assert s.scope_status(T0)[0]["offered"] == 0


def test_allocation_until_exhausted_then_nak(tmp_path: Path) -> None:
    s = make(tmp_path)
    got = [addresses(send(s, request(n)))[0] for n in range(1, 5)]
    assert sorted(got) == ["239.255.0.1", "239.255.0.2", "239.255.0.3", "239.255.0.4"]
    nak = send(s, request(9))
    assert nak is not None and nak.msgtype == MsgType.NAK and nak.error is not None
    assert nak.error.code == ErrorCode.COULD_NOT_COMPLETE
    assert send(s, Message(msgtype=MsgType.DISCOVER, xid=10, lease_id=lid(10),
                           scope=SCOPE_ID)) is None  # silence, not NAK
    assert s.counters["requests_denied"] == 1


def test_exclusions_and_relative_block_never_leased(tmp_path: Path) -> None:
    scope = {"name": "x", "range": "239.255.0.0/16", "exclusions": ["239.255.0.0-239.255.255.0"]}
    s = make(tmp_path, scope)
    nak = send(s, request(1))  # everything excluded but .255.x, the relative block
    assert nak is not None and nak.msgtype == MsgType.NAK
    s2 = make(tmp_path / "b", {"name": "y", "range": "239.255.0.0/16",
                               "exclusions": ["239.255.0.0-239.255.254.254"]})
    assert addresses(send(s2, request(1))) == ["239.255.254.255"]
    nak = send(s2, request(2))
    assert nak is not None and nak.msgtype == MsgType.NAK


def test_several_addresses_min_and_desired(tmp_path: Path) -> None:
    s = make(tmp_path)
    ack = send(s, request(1, num_addresses=(2, 3)))
    assert len(addresses(ack)) == 3
    assert ack is not None and ack.address_ranges == (
        AddressRange(ipaddress.IPv4Address("239.255.0.1"), 3),)
    nak = send(s, request(2, num_addresses=(2, 2)))  # one left
    assert nak is not None and nak.msgtype == MsgType.NAK
    assert len(addresses(send(s, request(3, num_addresses=(1, 2))))) == 1
    bad = send(s, request(4, num_addresses=(3, 2)))
    assert bad is not None and bad.error is not None
    assert bad.error.code == ErrorCode.INVALID_REQUEST


def test_specific_addresses_requested(tmp_path: Path) -> None:
    s = make(tmp_path)
    want = (AddressRange(ipaddress.IPv4Address("239.255.0.3"), 1),)
    assert addresses(send(s, request(1, address_ranges=want))) == ["239.255.0.3"]


def test_renew_and_release(tmp_path: Path) -> None:
    s = make(tmp_path)
    ack = send(s, request(1, lease_time=100))
    assert ack is not None and ack.lease_time == 100
    renewed = send(s, Message(msgtype=MsgType.RENEW, xid=50, lease_id=lid(1), lease_time=300),
                   T0 + 50)
    assert renewed is not None and renewed.msgtype == MsgType.ACK
    assert renewed.lease_time == 300 and addresses(renewed) == addresses(ack)
    assert s.leases[lid(1)].end == T0 + 50 + 300
    too_long = send(s, Message(msgtype=MsgType.RENEW, xid=51, lease_id=lid(1),
                               lease_time=10**6), T0 + 60)
    assert too_long is not None and too_long.lease_time == 3600  # capped at lease_max
    unknown = send(s, Message(msgtype=MsgType.RENEW, xid=52, lease_id=lid(7)))
    assert unknown is not None and unknown.error is not None
    assert unknown.error.code == ErrorCode.LEASE_ID_NOT_RECOGNIZED
    rel = send(s, Message(msgtype=MsgType.RELEASE, xid=53, lease_id=lid(1)), T0 + 70)
    assert rel is not None and rel.msgtype == MsgType.ACK and rel.error is None
    again = send(s, Message(msgtype=MsgType.RELEASE, xid=54, lease_id=lid(1)), T0 + 71)
    assert again is not None and again.msgtype == MsgType.NAK


def test_released_address_is_quarantined_for_the_guard_time(tmp_path: Path) -> None:
    s = make(tmp_path, guard=100.0)
    first = addresses(send(s, request(1, lease_time=60)))
    send(s, Message(msgtype=MsgType.RELEASE, xid=9, lease_id=lid(1)), T0 + 10)
    taken = [addresses(send(s, request(n, lease_time=60), T0 + 20))[0] for n in range(2, 5)]
    assert first[0] not in taken
    nak = send(s, request(5, lease_time=60), T0 + 20)
    assert nak is not None and nak.msgtype == MsgType.NAK  # the released one is still held
    s.expire(T0 + 200)
    assert addresses(send(s, request(6, lease_time=60), T0 + 200)) == first


def test_expiry_reclaims(tmp_path: Path) -> None:
    s = make(tmp_path, guard=0.0)
    for n in range(1, 5):
        send(s, request(n, lease_time=60))
    expired = s.expire(T0 + 61)
    assert len(expired) == 4 and not s.leases
    s.commit()
    assert addresses(send(s, request(9), T0 + 62))


def test_renewed_lease_outlives_its_first_end_and_windows_go_after_the_guard(
        tmp_path: Path) -> None:
    s = make(tmp_path, guard=50.0)
    send(s, request(1, lease_time=100))
    send(s, Message(msgtype=MsgType.RENEW, xid=2, lease_id=lid(1), lease_time=300), T0 + 50)
    assert s.expire(T0 + 101) == [] and lid(1) in s.leases  # the first end is stale
    assert [le.lease_id for le in s.expire(T0 + 351)] == [lid(1)]
    s.commit()
    assert s.pools["small"].windows  # held for the guard time after the end
    s.expire(T0 + 401)
    assert not s.pools["small"].windows and not s.held


def test_future_start_time_echoed(tmp_path: Path) -> None:
    s = make(tmp_path)
    start = int(T0) + 7200
    ack = send(s, request(1, start_time=start, current_time=int(T0), lease_time=600))
    assert ack is not None and ack.start_time == start and ack.current_time == int(T0)
    assert s.leases[lid(1)].start == start


def test_start_time_needs_current_time(tmp_path: Path) -> None:
    s = make(tmp_path)
    nak = send(s, request(1, start_time=int(T0) + 10))
    assert nak is not None and nak.error is not None
    assert (nak.error.code, nak.error.option) == (ErrorCode.INVALID_REQUEST, Opt.CURRENT_TIME)


def test_min_lease_time_and_max_start(tmp_path: Path) -> None:
    s = make(tmp_path)
    nak = send(s, request(1, min_lease_time=7200))  # lease_max is 3600
    assert nak is not None and nak.error is not None
    assert (nak.error.code, nak.error.option) == (ErrorCode.COULD_NOT_COMPLETE,
                                                  Opt.MIN_LEASE_TIME)
    ack = send(s, request(2, start_time=int(T0) + 900, max_start_time=int(T0) + 300,
                          current_time=int(T0)))
    assert ack is not None and ack.start_time == int(T0) + 300


def test_clock_skew(tmp_path: Path) -> None:
    s = make(tmp_path)
    nak = send(s, request(1, current_time=int(T0) - 3600))
    assert nak is not None and nak.error is not None
    assert nak.error.code == ErrorCode.EXCESSIVE_CLOCK_SKEW and nak.error.server_time == int(T0)
    assert s.counters["clock_skews"] == 1


def test_retransmission_gets_identical_reply_and_allocates_nothing(tmp_path: Path) -> None:
    s = make(tmp_path)
    raw = wire.encode(request(1, xid=77))
    first = s.exchange(raw, CLIENT, SERVER, T0)
    second = s.exchange(raw, CLIENT, SERVER, T0 + 5)
    assert first == second and first is not None
    assert len(s.leases) == 1 and s.counters["retransmissions"] == 1
    third = s.exchange(raw, CLIENT, SERVER, T0 + 61)  # past the cache: a new transaction
    assert third is not None and len(s.leases) == 1  # same LID -> the same lease


def test_scope_lifetime_ends_leasing(tmp_path: Path) -> None:
    s = make(tmp_path, {**SMALL, "lifetime_end": T0 + 100})
    ack = send(s, request(1, lease_time=3600))
    assert ack is not None and ack.lease_time == 100  # never beyond the scope's life
    nak = send(s, request(2), T0 + 101)
    assert nak is not None and nak.msgtype == MsgType.NAK
    info = send(s, Message(msgtype=MsgType.GETINFO, xid=9, lease_id=lid(3), option_request=(9,)),
                T0 + 101)
    assert info is not None and info.scope_list == ()


def test_groups_seen_by_sapd_are_avoided(tmp_path: Path) -> None:
    store = SqliteLeaseStore(tmp_path / "l.sqlite3")
    s = Harness([scope_from_config(SMALL, 0)], store, T0)
    s.set_avoided(["239.255.0.1", "239.255.0.2"])
    got = sorted(addresses(send(s, request(n))) [0] for n in (1, 2))
    assert got == ["239.255.0.3", "239.255.0.4"]


def test_required_feature_not_supported(tmp_path: Path) -> None:
    s = make(tmp_path)
    nak = send(s, request(1, features=Features((0,), (), (0,))))
    assert nak is not None and nak.error is not None
    assert nak.error.code == ErrorCode.REQUIRED_FEATURE_NOT_SUPPORTED
    assert nak.error.features == (0,) and nak.features == Features((), (), ())


def test_server_messages_and_garbage_are_never_answered(tmp_path: Path) -> None:
    s = make(tmp_path)
    for t in (MsgType.OFFER, MsgType.ACK, MsgType.NAK):
        assert s.exchange(wire.encode(Message(msgtype=t, xid=1, lease_id=lid(1))), CLIENT,
                          SERVER, T0) is None
    assert s.exchange(b"\x00\x03garbage", CLIENT, SERVER, T0) is None
    assert s.counters["invalid"] == 1


def test_restart_keeps_every_lease(tmp_path: Path) -> None:
    s = make(tmp_path)
    held = {n: addresses(send(s, request(n))) for n in (1, 2)}
    s.store.close()
    again = make(tmp_path, now=T0 + 10)
    assert set(again.leases) == {lid(1), lid(2)}
    new = [addresses(send(again, request(n), T0 + 11))[0] for n in (3, 4)]
    assert not set(new) & {a for v in held.values() for a in v}
    renewed = send(again, Message(msgtype=MsgType.RENEW, xid=99, lease_id=lid(1)), T0 + 12)
    assert renewed is not None and addresses(renewed) == held[1]


def test_revoke(tmp_path: Path) -> None:
    s = make(tmp_path, guard=10.0)
    send(s, request(1))
    assert s.revoke(lid(1), T0 + 1) is not None
    s.commit()
    assert not s.leases
    renew = send(s, Message(msgtype=MsgType.RENEW, xid=3, lease_id=lid(1)), T0 + 2)
    assert renew is not None and renew.msgtype == MsgType.NAK


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "a", "range": "224.2.0.0/16"}, "reserved by RFC 5771"),
    ({"name": "a", "range": "239.255.0.0/16", "pool": "239.255.255.0-239.255.255.10"},
     "top /24"),
    ({"name": "a", "range": "239.255.0.0/16", "pool": "239.254.0.0-239.254.0.10"},
     "not inside the scope"),
    ({"name": "a", "range": "232.0.0.0/8"}, "reserved by RFC 5771"),
    ({"name": "a", "range": "10.0.0.0/8"}, "not multicast"),
    ({"range": "239.255.0.0/16"}, "scope[0].name: required"),
    ({"name": "a", "range": "239.255.0.0/16", "lease_min": 10, "lease_default": 5},
     "lease_min"),
    ({"name": "a", "range": "ff15::/16", "pool": "ff15::1-ff15::10"}, "RFC 3307"),
])
def test_bad_pools_are_refused_at_configuration(entry: dict[str, object], message: str) -> None:
    with pytest.raises(PoolConfigError, match=re.escape(message)):
        scope_from_config(entry, 0)


def test_overlapping_scopes_refused() -> None:
    a = scope_from_config({"name": "a", "range": "239.255.0.0/16"}, 0)
    b = scope_from_config({"name": "b", "range": "239.255.0.0/16",
                           "pool": "239.255.1.0-239.255.1.9"}, 1)
    with pytest.raises(PoolConfigError, match="overlaps"):
        check_overlaps([a, b])


def test_ipv6_scope_allocates_dynamic_group_ids(tmp_path: Path) -> None:
    entry = {"name": "site6", "range": "ff15::/16"}
    store = SqliteLeaseStore(tmp_path / "l6.sqlite3")
    s = Harness([scope_from_config(entry, 0)], store, T0)
    msg = Message(msgtype=MsgType.REQUEST, xid=1, family=wire.FAMILY_IPV6, lease_id=lid(1),
                  scope=ipaddress.IPv6Address("ff15::"))
    (address,) = addresses(send(s, msg))
    assert int(ipaddress.IPv6Address(address)) & 0xFFFFFFFF >= 0x80000000
