"""Two hosts on a veth link: what one sends, the other's sapd lists."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.daemons import netns_send, wait_session
from tests.netns.harness import Network, ip
from tests.packets import announce, delete, sdp_text
from tests.support import wait_for


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_v4_and_v6_cross_the_link(net: Network, daemons: Any, tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    ia, ib = net.link(a, b, 1)
    sapd = daemons("sapd", b).start()
    v4 = write(tmp_path, "v4", announce(sdp_text(session=1, name="over v4",
                                                 group="239.255.9.9"), source=a.address()))
    v6 = write(tmp_path, "v6", announce(
        sdp_text(session=2, name="over v6").replace(
            "c=IN IP4 239.255.1.1/32", "c=IN IP6 ff0e::4242"), source="fd00:1::1"))
    netns_send(a.name, "239.255.255.255", [v4], ia)
    netns_send(a.name, "ff0e::2:7ffe", [v6], ia)
    (s4,) = wait_session(sapd, lambda s: s["name"] == "over v4")
    (s6,) = wait_session(sapd, lambda s: s["name"] == "over v6")
    assert s4["source"] == a.address() and s4["groups"] == ["239.255.9.9"]
    assert s6["source"] == "fd00:1::1" and s6["scope"] == "ipv6-global"
    # where each was heard, from IP_PKTINFO / IPV6_PKTINFO
    assert s4["heard_via"] == [{"via": "sap", "group": "239.255.255.255", "interface": ib,
                                "source": a.address()}]
    assert s6["heard_via"] == [{"via": "sap", "group": "ff0e::2:7ffe", "interface": ib,
                                "source": "fd00:1::1"}]


def test_deletion_and_version_across_hosts(net: Network, daemons: Any, tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    ia, _ = net.link(a, b, 2)
    sapd = daemons("sapd", b).start()
    src = a.address()
    netns_send(a.name, "224.2.127.254",
               [write(tmp_path, "v1", announce(sdp_text(version=1, name="one"), source=src))], ia)
    wait_session(sapd, lambda s: s["name"] == "one")
    netns_send(a.name, "224.2.127.254",
               [write(tmp_path, "v2", announce(sdp_text(version=2, name="two"), source=src))], ia)
    wait_session(sapd, lambda s: s["name"] == "two")
    assert len(sapd.sessions()) == 1
    netns_send(a.name, "224.2.127.254", [write(tmp_path, "d", delete(version=2, source=src))],
               ia)
    wait_for(lambda: sapd.sessions() == [], 3, what="deleted")


def test_interface_that_comes_later_is_joined_and_rejoined(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    sapd = daemons("sapd", b).start()  # b has no interface but lo yet
    assert sapd.stats()["interfaces"] == []
    ia, ib = net.link(a, b, 3)
    wait_for(lambda: ib in sapd.stats()["interfaces"], 10, what="interface joined")
    packet = write(tmp_path, "p", announce(sdp_text(name="late"), source=a.address()))
    netns_send(a.name, "239.255.255.255", [packet], ia)
    wait_session(sapd, lambda s: s["name"] == "late")
    ip("link", "set", ib, "down", netns=b.name)
    wait_for(lambda: ib not in sapd.stats()["interfaces"], 10, what="interface dropped")
    ip("link", "set", ib, "up", netns=b.name)
    ip("route", "replace", "224.0.0.0/4", "dev", ib, netns=b.name)
    wait_for(lambda: ib in sapd.stats()["interfaces"], 10, what="interface rejoined")
    time.sleep(0.3)
    packet2 = write(tmp_path, "p2", announce(sdp_text(session=5, name="after"),
                                             source=a.address()))
    netns_send(a.name, "239.255.255.255", [packet2], ia)
    wait_session(sapd, lambda s: s["name"] == "after")


def test_other_listener_on_same_host_keeps_working(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    ia, _ = net.link(a, b, 4)
    first = daemons("sapd", b, name="first").start()
    second = daemons("sapd", b, name="second").start()
    packet = write(tmp_path, "p", announce(sdp_text(name="both"), source=a.address()))
    netns_send(a.name, "239.255.255.255", [packet], ia)
    wait_session(first, lambda s: s["name"] == "both")
    wait_session(second, lambda s: s["name"] == "both")
