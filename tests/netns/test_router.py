"""Two links joined by a multicast router (smcroute) that forwards only the global SAP
group: TTL and administrative scope decide what crosses, and one madcapd on the router
serves both links."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.daemons import wait_session
from tests.madcap_load import kill_under_load
from tests.netns.harness import Network, Router, sh
from tests.support import ROOT, script

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()
GLOBAL_SAP = "224.2.127.254"


def session(name: str, group: str, session_id: int) -> str:
    return EXAMPLE.replace("Lab tone 1 kHz", name).replace("239.255.10.1", group).replace(
        "3917001234", str(session_id))


def routed(net: Network) -> Router:
    return net.router(net.host("a"), net.host("b"), forward=[GLOBAL_SAP])


def test_ttl_and_admin_scope_boundary(net: Network, daemons: Any) -> None:
    router = routed(net)
    a, b = net.hosts["a"], net.hosts["b"]
    sapd_a, sapd_r, sapd_b = (daemons("sapd", h).start() for h in (a, router.host, b))
    announced = {
        "global ttl 1": (session("global ttl 1", "224.2.200.1", 1), 1),
        "global ttl 16": (session("global ttl 16", "224.2.200.2", 2), 16),
        "local ttl 16": (session("local ttl 16", "239.255.20.1", 3), 16),
    }
    for name, (sdp, ttl) in announced.items():
        made = sapd_a.client.send_json("POST", "/v1/announcements", {"sdp": sdp, "ttl": ttl})
        group = made["announcement"]["targets"][0]["sap_group"]
        assert group == (GLOBAL_SAP if "global" in name else "239.255.255.255"), made
    # The router's own sapd hears all three: they were on the wire of the left link.
    for name in announced:
        wait_session(sapd_r, lambda s, n=name: s["name"] == n)
    wait_session(sapd_b, lambda s: s["name"] == "global ttl 16")
    time.sleep(1.0)  # time for anything else to arrive, were it to cross
    assert [s["name"] for s in sapd_b.sessions()] == ["global ttl 16"]
    assert sum(sapd_b.stats()["drops"].values()) == 0


def test_madcapd_on_the_router_serves_both_links(net: Network, daemons: Any,
                                                 tmp_path: Path) -> None:
    router = routed(net)
    madcapd = daemons("madcapd", router.host, "--sapd-socket", str(tmp_path / "none.sock"))
    madcapd.start()
    sides = [(net.hosts["a"], router.left_if), (net.hosts["b"], router.right_if)]
    got: dict[str, list[str]] = {}
    for host, ifname in sides:
        ctl = [script("madcapctl"), "--interface", ifname, "--timeout", "10",
               "--lease-file", str(tmp_path / f"{host.name}.json")]
        for _ in range(5):  # found by multicast discovery on each link
            result = sh(host.name, *ctl, "request", "--count", "4", "--json")
            assert result.returncode == 0, result.stderr
            lease = json.loads(result.stdout)
            assert lease["server"].startswith(router.host.address(
                router.router_left if host.name.endswith("a") else router.router_right))
            got.setdefault(host.name, []).extend(lease["addresses"])
    every = [addr for addresses in got.values() for addr in addresses]
    assert len(every) == 40 and len(set(every)) == 40, "an address was leased twice"
    leases = madcapd.get("/v1/leases")["leases"]
    clients = {row["client"].rsplit(":", 1)[0].split("%")[0] for row in leases}
    assert clients == {net.hosts["a"].address(), net.hosts["b"].address()}


def test_madcapd_on_the_router_survives_twenty_kills(net: Network, daemons: Any,
                                                     tmp_path: Path) -> None:
    router = routed(net)
    config = tmp_path / "madcapd.toml"  # the default scope, without the per-client cap:
    config.write_text('[[scope]]\nname = "local"\nrange = "239.255.0.0/16"\nttl = 16\n'
                      'max_addresses_per_client = 1000000\n')  # two hosts make all the load
    madcapd = daemons("madcapd", router.host, "--sapd-socket", str(tmp_path / "none.sock"),
                      "--config", str(config))
    clients = [(router.host.address(router.router_left), net.hosts["a"].name),
               (router.host.address(router.router_right), net.hosts["b"].name)]
    acked = kill_under_load(madcapd, clients, 2535, tmp_path, rounds=20, seed=20)
    print(f"{len(acked)} acknowledged leases survived 20 SIGKILLs")
