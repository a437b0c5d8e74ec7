"""A lease changes only for requests from the host that holds it (the datagram's source
address; the port may change). A lease id is no secret (DISCOVERs and multicast REQUESTs
carry it to the whole scope), so another host that names it is told what RFC 2730
s. 3.17.4 tells a client naming an unknown lease: error 3, counted."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from madcap.wire import ErrorCode, Message, MsgType
from tests.madcap_harness import Harness
from tests.unit.test_madcap_server import SCOPE_ID, SERVER, T0, lid, make, send

HOLDER = "10.0.0.9:40000"
HOLDER_NEW_PORT = "10.0.0.9:41234"
OTHER = "10.0.0.66:40000"


def _lease(tmp_path: Path) -> tuple[Harness, Message]:
    server = make(tmp_path)
    ack = send(server, Message(msgtype=MsgType.REQUEST, xid=1, lease_id=lid(1), scope=SCOPE_ID),
               client=HOLDER)
    assert ack is not None and ack.msgtype == MsgType.ACK
    return server, ack


def _not_recognized(reply: Message | None) -> bool:
    return reply is not None and reply.msgtype == MsgType.NAK and reply.error is not None \
        and reply.error.code == ErrorCode.LEASE_ID_NOT_RECOGNIZED


def test_renew_from_another_host_extended_the_lease(tmp_path: Path) -> None:
    server, _ = _lease(tmp_path)
    before = server.leases[lid(1)]
    reply = send(server, Message(msgtype=MsgType.RENEW, xid=2, lease_id=lid(1),
                                 lease_time=3600), T0 + 10, client=OTHER)
    assert _not_recognized(reply), reply
    assert server.leases[lid(1)] == before
    assert server.counters["lease_id_of_another_host"] == 1


def test_release_from_another_host_ended_the_lease(tmp_path: Path) -> None:
    server, _ = _lease(tmp_path)
    reply = send(server, Message(msgtype=MsgType.RELEASE, xid=2, lease_id=lid(1)), T0 + 1,
                 client=OTHER)
    assert _not_recognized(reply), reply
    assert lid(1) in server.leases


def test_request_from_another_host_was_acked_the_holders_addresses(tmp_path: Path) -> None:
    server, _ = _lease(tmp_path)
    reply = send(server, Message(msgtype=MsgType.REQUEST, xid=9, lease_id=lid(1),
                                 scope=SCOPE_ID), T0 + 1, client=OTHER)
    assert _not_recognized(reply), reply


def test_discover_from_another_host_was_offered_the_holders_addresses(tmp_path: Path) -> None:
    server, _ = _lease(tmp_path)
    reply = send(server, Message(msgtype=MsgType.DISCOVER, xid=9, lease_id=lid(1),
                                 scope=SCOPE_ID), T0 + 1, client=OTHER, multicast=True)
    assert reply is None  # DISCOVERs a server will not satisfy get silence
    assert server.counters["lease_id_of_another_host"] == 1


def test_another_host_took_an_offer_made_to_the_holder(tmp_path: Path) -> None:
    server = make(tmp_path)
    offer = send(server, Message(msgtype=MsgType.DISCOVER, xid=1, lease_id=lid(1),
                                 scope=SCOPE_ID), client=HOLDER, multicast=True)
    assert offer is not None and offer.msgtype == MsgType.OFFER
    stolen = send(server, Message(msgtype=MsgType.REQUEST, xid=2, lease_id=lid(1),
                                  scope=SCOPE_ID, server_id=SERVER), T0 + 1, client=OTHER,
                  multicast=True)
    assert _not_recognized(stolen), stolen
    again = send(server, Message(msgtype=MsgType.DISCOVER, xid=3, lease_id=lid(1),
                                 scope=SCOPE_ID), T0 + 1, client=OTHER, multicast=True)
    assert again is None
    ack = send(server, Message(msgtype=MsgType.REQUEST, xid=4, lease_id=lid(1),
                               scope=SCOPE_ID, server_id=SERVER), T0 + 2, client=HOLDER,
               multicast=True)
    assert ack is not None and ack.msgtype == MsgType.ACK
    assert ack.address_ranges == offer.address_ranges  # the offer was still the holder's


def test_holder_renews_and_releases_from_another_port(tmp_path: Path) -> None:
    server, ack = _lease(tmp_path)
    renewed = send(server, Message(msgtype=MsgType.RENEW, xid=2, lease_id=lid(1)), T0 + 10,
                   client=HOLDER_NEW_PORT)
    assert renewed is not None and renewed.msgtype == MsgType.ACK
    assert renewed.address_ranges == ack.address_ranges
    released = send(server, Message(msgtype=MsgType.RELEASE, xid=3, lease_id=lid(1)), T0 + 20,
                    client=HOLDER_NEW_PORT)
    assert released is not None and released.msgtype == MsgType.ACK
    assert lid(1) not in server.leases


def test_request_of_another_host_for_another_server_was_nakked(tmp_path: Path) -> None:
    """A multicast REQUEST that chose another server gets silence from this one (RFC
    2730 s. 2.2.4), whoever sends it; it does not cancel the holder's offer either."""
    server = make(tmp_path)
    offer = send(server, Message(msgtype=MsgType.DISCOVER, xid=1, lease_id=lid(1),
                                 scope=SCOPE_ID), client=HOLDER, multicast=True)
    assert offer is not None and offer.msgtype == MsgType.OFFER
    elsewhere = send(server, Message(msgtype=MsgType.REQUEST, xid=2, lease_id=lid(1),
                                     scope=SCOPE_ID, server_id=ipaddress.IPv4Address("10.9.9.9")),
                     T0 + 1, client=OTHER, multicast=True)
    assert elsewhere is None
    ack = send(server, Message(msgtype=MsgType.REQUEST, xid=3, lease_id=lid(1),
                               scope=SCOPE_ID, server_id=SERVER), T0 + 2, client=HOLDER,
               multicast=True)
    assert ack is not None and ack.address_ranges == offer.address_ranges
