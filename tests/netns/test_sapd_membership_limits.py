"""Linux caps IPv4 memberships per socket (net.ipv4.igmp_max_memberships, per namespace):
sapd spreads its joins over as many receiving sockets as it needs, hears each datagram
once, and says `degraded` in /v1/health, naming the failure, while a join fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.daemons import netns_send, wait_session
from tests.netns.harness import Host, Network, sh
from tests.packets import announce, sdp_text
from tests.support import wait_for


def _limit_memberships(host: Host, limit: int) -> None:
    result = sh(host.name, "sysctl", "-qw", f"net.ipv4.igmp_max_memberships={limit}")
    assert result.returncode == 0, result.stderr


def test_joins_over_the_per_socket_limit_are_heard_once(net: Network, daemons: Any,
                                                        tmp_path: Path) -> None:
    studio, sender = net.host("st"), net.host("se")
    links = [net.link(sender, studio, subnet, multicast_route=subnet == 1)
             for subnet in range(1, 4)]
    _limit_memberships(studio, 2)  # 4 SAP groups x 3 interfaces: 6 sockets' worth
    sapd = daemons("sapd", studio).start()
    stats = sapd.stats()
    assert not stats["failed_joins"] and len(stats["memberships"]) >= 12, stats
    packet = tmp_path / "last.sap"
    packet.write_bytes(announce(sdp_text(name="last"), source=sender.address()))
    netns_send(sender.name, "239.255.255.255", [packet], links[-1][0])
    wait_session(sapd, lambda s: s["name"] == "last")
    wait_for(lambda: sum(sapd.stats()["packets"].values()) >= 1, 5, what="counted")
    assert sapd.stats()["packets"]["new"] == 1 and sum(sapd.stats()["packets"].values()) == 1
    assert sapd.get("/v1/health")["status"] == "ok"


def test_health_is_degraded_naming_a_failed_join(net: Network, daemons: Any) -> None:
    studio, other = net.host("st"), net.host("ot")
    net.link(other, studio, 1)
    _limit_memberships(studio, 0)  # no IPv4 join can succeed
    sapd = daemons("sapd", studio).start()
    health = sapd.get("/v1/health")
    assert health["status"] == "degraded", health
    assert "No buffer space available" in health["memberships"], health
    assert sapd.stats()["failed_joins"], sapd.stats()
    assert sapd.proc is not None  # a socket that takes no join is closed, not kept
    sockets = [fd for fd in os.listdir(f"/proc/{sapd.proc.pid}/fd")
               if os.readlink(f"/proc/{sapd.proc.pid}/fd/{fd}").startswith("socket:")]
    assert len(sockets) < 32, f"{len(sockets)} sockets open"
