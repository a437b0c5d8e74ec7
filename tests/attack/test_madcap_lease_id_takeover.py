"""A Lease Identifier is no secret: DISCOVERs and multicast REQUESTs carry it to every
host on the scope's MADCAP group. madcapd keys a lease on it alone, never on the
datagram's source, although it records the client (madcap/server.py _request, _renew,
_release look up self.leases[msg.lease_id] and nothing else). So another host that
overheard it can release the lease, or REQUEST with it and be ACKed the same addresses:
two senders on one group, both holding an ACK."""

from __future__ import annotations

from pathlib import Path

from madcap.wire import Message, MsgType
from tests.attack.test_madcap_hostile_requests import LOCAL
from tests.unit.test_madcap_server import SCOPE_ID, T0, lid, make, send

VICTIM = "10.0.0.9:40000"
EAVESDROPPER = "10.0.0.66:40000"


def test_another_host_cannot_release_a_lease_it_overheard(tmp_path: Path) -> None:
    server = make(tmp_path, LOCAL)
    ack = send(server, Message(msgtype=MsgType.REQUEST, xid=1, lease_id=lid(1), scope=SCOPE_ID),
               client=VICTIM)
    assert ack is not None and ack.msgtype == MsgType.ACK
    send(server, Message(msgtype=MsgType.RELEASE, xid=2, lease_id=lid(1)), T0 + 1,
         client=EAVESDROPPER)
    assert lid(1) in server.leases, "the victim's lease was released by another host"


def test_another_host_is_not_acked_a_lease_it_overheard(tmp_path: Path) -> None:
    server = make(tmp_path, LOCAL)
    ack = send(server, Message(msgtype=MsgType.REQUEST, xid=1, lease_id=lid(1), scope=SCOPE_ID),
               client=VICTIM)
    assert ack is not None and ack.msgtype == MsgType.ACK
    stolen = send(server, Message(msgtype=MsgType.REQUEST, xid=7, lease_id=lid(1),
                                  scope=SCOPE_ID), T0 + 1, client=EAVESDROPPER)
    assert stolen is None or stolen.msgtype != MsgType.ACK or \
        stolen.address_ranges != ack.address_ranges, "two hosts ACKed the same addresses"
