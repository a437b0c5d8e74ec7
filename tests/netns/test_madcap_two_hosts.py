"""madcapd on one host, madcapctl on another finding it by multicast (no --server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.netns.harness import Network, sh
from tests.support import script


def test_multicast_discovery_request_release(net: Network, daemons: Any,
                                             tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    _, ib = net.link(a, b, 20)
    madcapd = daemons("madcapd", a, "--sapd-socket", str(tmp_path / "none.sock")).start()
    ctl = [script("madcapctl"), "--interface", ib, "--lease-file",
           str(tmp_path / "leases.json"), "--timeout", "10"]
    scopes = sh(b.name, *ctl, "scopes", "--json")
    assert scopes.returncode == 0, scopes.stderr
    (scope,) = json.loads(scopes.stdout)
    assert scope["scope_id"] == "239.255.0.0" and scope["server"].startswith(a.address())
    got = sh(b.name, *ctl, "request", "--count", "2", "--json")
    assert got.returncode == 0, got.stderr
    lease = json.loads(got.stdout)
    assert len(lease["addresses"]) == 2 and lease["server"].startswith(a.address())
    (row,) = madcapd.get("/v1/leases")["leases"]
    assert row["client"].startswith(b.address()) and row["addresses"] == lease["addresses"]
    stats = madcapd.get("/v1/stats")["counters"]
    # one GETINFO for `scopes`, one as `request` picks its scope
    assert stats["discovers"] == 1 and stats["offers"] == 1 and stats["informs"] == 2
    released = sh(b.name, *ctl, "release", lease["lease_id"])
    assert released.returncode == 0, released.stderr
    assert madcapd.get("/v1/leases")["leases"] == []
