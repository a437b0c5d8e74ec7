"""sapd joins every SAP group on every multicast interface through one IPv4 socket, and
Linux allows 20 IPv4 memberships per socket (net.ipv4.igmp_max_memberships). With four
IPv4 SAP groups, a host with six or more multicast interfaces (two Dante NICs, a
management port, a docker bridge and its veths...) gets ENOBUFS for the rest: the joins
are listed under failed_joins in /v1/stats, /v1/health stays "ok", and announcements on
239.255.255.255 (where Dante and AES67 announce) are never heard on the later
interfaces: the streams are missing from the list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.daemons import netns_send, wait_session
from tests.netns.harness import Network, ip
from tests.packets import announce, sdp_text


def test_dante_on_the_eighth_interface_is_listed(net: Network, daemons: Any,
                                                 tmp_path: Path) -> None:
    studio, others, dante = net.host("st"), net.host("ot"), net.host("da")
    for subnet in range(1, 8):  # seven other multicast interfaces come first
        net.link(studio, others, subnet, multicast_route=subnet == 1)
    ia, _ = net.link(dante, studio, 8, multicast_route=False)
    ip("route", "add", "224.0.0.0/4", "dev", ia, netns=dante.name)
    sapd = daemons("sapd", studio).start()
    packet = tmp_path / "dante.sap"
    packet.write_bytes(announce(sdp_text(name="dante", origin=dante.address()),
                                source=dante.address()))
    netns_send(dante.name, "239.255.255.255", [packet], ia, repeat=3, interval=0.3)
    try:
        wait_session(sapd, lambda s: s["name"] == "dante", timeout=3)
    except AssertionError:
        stats = sapd.stats()
        raise AssertionError(f"not listed; health {sapd.get('/v1/health')['status']}; "
                             f"{len(stats['failed_joins'])} failed joins, e.g. "
                             f"{sorted(stats['failed_joins'].items())[-1:]}") from None
    assert sapd.get("/v1/health")["status"] == "ok" and not sapd.stats()["failed_joins"]
