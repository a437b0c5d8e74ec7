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


class Network:
    def __init__(self) -> None:
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

    def teardown(self) -> None:
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "pids", netns], capture_output=True, check=False)
            pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
        self.namespaces.clear()
