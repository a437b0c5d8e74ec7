"""GET /v1/leases has no limit or paging: it sorts and encodes every lease on madcapd's
event loop (madcap/api.py leases -> daemon.leases -> server.query -> to_json). One
pool's worth (65,280 leases, which one client can take with 255 REQUESTs, see
test_madcap_hostile_requests) is a 16 MB answer and a ~1.2 s stall of the loop that
answers MADCAP; several scopes (the benchmark leaves ~380,000 leases) make it several
seconds. This test does the handler's work on the daemon's own objects."""

from __future__ import annotations

import time

from madcap.leases import ACTIVE, Lease, LeaseQuery
from madcap.pool import scope_from_config
from madcap.server import MadcapServer
from sapd.plumbing.control import json_bytes

T0 = 1_800_000_000.0


def test_listing_a_full_pool_costs_a_bounded_page() -> None:
    scope = scope_from_config({"name": "local", "range": "239.255.0.0/16"}, 0)
    leases = [Lease(lease_id=b"\0" + i.to_bytes(16, "big"), scope="local",
                    addresses=(f"239.255.{i >> 8}.{i & 255}",), start=T0 - 100, end=T0 + 3000,
                    state=ACTIVE, client="10.0.0.9:4000", granted=T0 - 100,
                    hold_until=T0 + 6600, xid=1) for i in range(65280)]
    server = MadcapServer([scope], leases, T0)
    started = time.perf_counter()
    found = server.query(LeaseQuery())
    body = json_bytes({"leases": [le.to_json(T0) for le in found], "now": T0})
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"{len(found)} leases, {len(body) >> 20} MB, {elapsed:.2f} s"
