"""sapd's SAP socket is bound to INADDR_ANY:9875 (shared with madcapd's receiver code,
which needs unicast), so a datagram sent by unicast to any of the host's addresses is
taken as an announcement. SAP is multicast (RFC 2974 section 3) and its reach is
bounded by administrative scope and TTL; unicast crosses every scope boundary: any host
that can route to the machine (another site, the internet if the port is open) lists
sessions in the studio's directory. README: "listens for SAP announcements ... on the
standard SAP groups"."""

from __future__ import annotations

import socket
import time

import pytest

from tests.daemons import Daemon
from tests.packets import announce, sdp_text


@pytest.mark.xfail(strict=True, reason="the SAP socket accepts unicast datagrams")
def test_a_unicast_datagram_is_not_an_announcement(sapd: Daemon) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(announce(sdp_text(name="from afar")), ("127.0.0.1", 9875))
    time.sleep(0.5)
    assert [s["name"] for s in sapd.sessions()] == []
