"""madcapd caches every reply for response_cache seconds (60 s; RFC 2730 section 2.5)
with no cap on entries or bytes (madcap/leases.py MemoryReplyCache). GETINFO costs the
sender nothing to vary: each new xid and a long Lease Identifier (this one 241 bytes)
adds ~1 KB that stays a minute. At the 7,000 exchanges/s madcapd keeps up with, that is
~450 MB held by one sender; a cap (oldest first, or per source) bounds it."""

from __future__ import annotations

import ipaddress
import tracemalloc

from madcap import wire
from madcap.pool import scope_from_config
from madcap.server import MadcapServer
from madcap.wire import Message, MsgType, Opt

T0 = 1_800_000_000.0
SERVER = ipaddress.IPv4Address("10.0.0.1")


def test_a_getinfo_flood_holds_bounded_memory() -> None:
    scope = scope_from_config({"name": "local", "range": "239.255.0.0/16",
                               "names": [{"language": "en", "name": "x" * 200}]}, 0)
    server = MadcapServer([scope], [], T0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):  # 2.9 s of a 7,000/s flood
            data = wire.encode(Message(msgtype=MsgType.GETINFO, xid=i,
                                       lease_id=b"\0" + i.to_bytes(16, "big") * 15,
                                       option_request=(Opt.SCOPE_LIST,)))
            server.handle(data, "10.0.0.66:4000", SERVER, T0 + i / 7000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 8_000_000, f"{grown / 1e6:.0f} MB held after 20,000 GETINFOs"
