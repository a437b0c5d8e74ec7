"""madcapd never leases a group sapd lists as in use (GET /v1/groups, the engine's
groups_in_use). But sapd/sdp.py expands a c= address count only up to 256 groups, without
a warning: a session on 239.255.1.1/32/1000 (or IPv6 ff15::8000:0/65535, RFC 8866
allows both) uses groups that /v1/groups does not name, so madcapd may hand one of them
to a new sender: two streams on one group."""

from __future__ import annotations

import ipaddress

import pytest

from sapd.lifecycle import Engine
from tests.packets import announce

SDP = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=wide\r\nc=IN {c}\r\nt=0 0\r\n"
       "m=audio 5004 RTP/AVP 96\r\n")


@pytest.mark.parametrize(("c", "first", "count"), [
    ("IP4 239.255.1.1/32/1000", "239.255.1.1", 1000),
    ("IP6 ff15::8000:0/65535", "ff15::8000:0", 65535)], ids=["ipv4", "ipv6"])
def test_every_group_of_an_accepted_session_is_in_use(c: str, first: str, count: int) -> None:
    engine = Engine()
    outcome = engine.receive_datagram(announce(SDP.format(c=c)), 1000.0)
    if outcome != "new":
        return  # refused with a reason: then nothing is in use, and that is honest
    # Groups in use are ranges (first and last), not every address expanded: what a
    # session uses is exact, and costs one entry whatever its count.
    start = ipaddress.ip_address(first)
    last = start + count - 1
    (in_use,) = engine.group_ranges()
    assert (in_use.first, in_use.last, in_use.count) == (start, last, count), in_use
    assert engine.groups_in_use() == {f"{first}-{last}"}
