"""Hosts in network namespaces joined by veth links or a bridge, for multi-host tests.

Names are unique per run (prefix from the pid and a counter) so parallel or crashed
runs never collide, and everything made is removed in teardown even when the test
failed: deleting a namespace deletes the interfaces inside it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import need_tool, wait_for

_counter = itertools.count()


def ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(("-n", netns) if netns else ()), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")


def sh(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, *args], capture_output=True,
                          text=True, check=False)


@dataclass
class Host:
    name: str  # the namespace
    interfaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # ifname -> v4, v6

    def address(self, ifname: str | None = None) -> str:
        return next(iter(self.interfaces.values()))[0] if ifname is None \
            else self.interfaces[ifname][0]


@dataclass
class Router:
    host: Host
    left_if: str  # on the left host
    router_left: str
    router_right: str
    right_if: str  # on the right host


class Network:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = f"sd{os.getpid() % 10000}x{next(_counter)}"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self._links = itertools.count()

    def host(self, name: str) -> Host:
        netns = f"{self.prefix}{name}"
        ip("netns", "add", netns)
        self.namespaces.append(netns)
        ip("link", "set", "lo", "up", netns=netns)
        host = Host(netns)
        self.hosts[name] = host
        return host

    def _ifname(self, tag: str) -> str:
        return f"v{self.prefix[2:]}{tag}{next(self._links)}"[:15]

    def _address(self, host: Host, ifname: str, subnet: int, index: int,
                 multicast_route: bool) -> None:
        v4 = f"10.{200 + subnet // 250}.{subnet % 250}.{index}"
        v6 = f"fd00:{subnet:x}::{index:x}"
        ip("addr", "add", f"{v4}/24", "dev", ifname, netns=host.name)
        ip("addr", "add", f"{v6}/64", "dev", ifname, "nodad", netns=host.name)
        ip("link", "set", ifname, "up", netns=host.name)
        if multicast_route:
            # With no default route a namespace has nowhere to send 224/4.
            ip("route", "add", "224.0.0.0/4", "dev", ifname, netns=host.name)
        host.interfaces[ifname] = (v4, v6)

    def link(self, a: Host, b: Host, subnet: int, multicast_route: bool = True,
             up: bool = True) -> tuple[str, str]:
        """A veth pair between two hosts, on 10.x.<subnet>.0/24 and fd00:<subnet>::/64."""
        ia, ib = self._ifname("a"), self._ifname("b")
        ip("link", "add", ia, "netns", a.name, "type", "veth", "peer", "name", ib,
           "netns", b.name)
        if up:
            self._address(a, ia, subnet, 1, multicast_route)
            self._address(b, ib, subnet, 2, multicast_route)
        return ia, ib

    def bridge(self, hosts: list[Host], subnet: int) -> str:
        """One link with several hosts: a bridge in its own namespace (the switch)."""
        switch = self.host("sw")
        bridge_name = f"s{self.prefix[2:]}"[:15]
        ip("link", "add", bridge_name, "type", "bridge", netns=switch.name)
        ip("link", "set", bridge_name, "type", "bridge", "mcast_snooping", "0",
           netns=switch.name)
        ip("link", "set", bridge_name, "up", netns=switch.name)
        for index, host in enumerate(hosts, start=1):
            inner, port = self._ifname("h"), self._ifname("p")
            ip("link", "add", inner, "netns", host.name, "type", "veth", "peer", "name", port,
               "netns", switch.name)
            ip("link", "set", port, "master", bridge_name, netns=switch.name)
            ip("link", "set", port, "up", netns=switch.name)
            self._address(host, inner, subnet, index, True)
        return bridge_name

    def router(self, left: Host, right: Host, forward: list[str],
               subnets: tuple[int, int] = (60, 61)) -> Router:
        """A multicast router between two links, as on a campus: ``left`` and ``right``
        route through it by default, and smcroute forwards exactly the groups in
        ``forward`` both ways, so every other group stops at the router (an
        administrative scope boundary). Packets with TTL 1 never cross it."""
        need_tool("smcrouted")
        router = self.host("r")
        left_if, router_left = self.link(left, router, subnets[0], multicast_route=False)
        router_right, right_if = self.link(router, right, subnets[1], multicast_route=False)
        ip("route", "add", "default", "via", router.address(router_left), netns=left.name)
        ip("route", "add", "default", "via", router.address(router_right), netns=right.name)
        forwarding = sh(router.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if forwarding.returncode != 0:
            raise RuntimeError(forwarding.stderr)
        conf = self.workdir / f"{router.name}-smcroute.conf"
        lines = [f"phyint {router_left} enable", f"phyint {router_right} enable"]
        for group in forward:
            lines += [f"mroute from {router_left} group {group} to {router_right}",
                      f"mroute from {router_right} group {group} to {router_left}"]
        conf.write_text("\n".join(lines) + "\n")
        control = self.workdir / f"{router.name}-smcroute.sock"
        log = (self.workdir / f"{router.name}-smcroute.log").open("wb")
        subprocess.Popen(["ip", "netns", "exec", router.name, "smcrouted", "-n", "-s",
                          "-f", str(conf), "-u", str(control)], stdout=log, stderr=log)
        log.close()

        def routes_loaded() -> bool:
            shown = sh(router.name, "smcroutectl", "-u", str(control), "show", "routes")
            return shown.returncode == 0
        wait_for(routes_loaded, 10, what="smcrouted")
        return Router(router, left_if, router_left, router_right, right_if)

    def teardown(self) -> None:
        for netns in reversed(self.namespaces):
            pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        self.namespaces.clear()
