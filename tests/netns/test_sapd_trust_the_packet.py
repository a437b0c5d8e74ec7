"""Trust the packet, not what it says about itself (issue 13 item 3): deletion rights,
"same source", the own-packet filter and the per-source rate limit follow the datagram's
IP source address, never the SAP header's originating-source field, which any sender
writes freely. A local announcement changes only through the control socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.daemons import Daemon, netns_send, wait_session
from tests.netns.harness import Network
from tests.packets import announce, delete, sdp_text
from tests.support import wait_for


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_deletion_from_another_host_with_the_victims_header_source_is_ignored(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    victim, listener, attacker = net.host("v"), net.host("l"), net.host("x")
    net.bridge([victim, listener, attacker], 80)
    sapd: Daemon = daemons("sapd", listener).start()
    v_if, x_if = next(iter(victim.interfaces)), next(iter(attacker.interfaces))
    source = victim.address()
    netns_send(victim.name, "239.255.255.255", [write(tmp_path, "a", announce(
        sdp_text(name="victim's stream", origin=source), source=source))], v_if)
    (session,) = wait_session(sapd, lambda s: s["name"] == "victim's stream")
    assert session["source"] == source and session["header_source"] == source
    (via,) = session["heard_via"]
    assert via == {"via": "sap", "group": "239.255.255.255",
                   "interface": next(iter(listener.interfaces)), "source": source}
    forged = write(tmp_path, "d", delete(source=source, origin=source))
    netns_send(attacker.name, "239.255.255.255", [forged], x_if)
    wait_for(lambda: sapd.stats()["drops"].get("unknown_deletion") == 1, 5,
             what=f"the forged deletion dropped; stats {sapd.stats()}")
    assert [s["name"] for s in sapd.sessions()] == ["victim's stream"]
    netns_send(victim.name, "239.255.255.255", [forged], v_if)  # the real sender may
    wait_for(lambda: sapd.sessions() == [], 5, what="deleted by its own sender")


def test_packets_with_sapds_own_address_leave_a_local_announcement_alone(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    home, other = net.host("h"), net.host("o")
    h_if, o_if = net.link(home, other, 81)
    sapd: Daemon = daemons("sapd", home).start()
    own = home.address()
    text = sdp_text(session=77, name="ours", group="239.255.8.8", origin=own)
    made = sapd.client.send_json("POST", "/v1/announcements", {"sdp": text, "interval": 1})
    sid = made["id"]
    (ours,) = sapd.sessions()
    assert ours["local"] and ours["source"] == own
    deletion = delete(session=77, source=own, origin=own)
    hijack = announce(sdp_text(session=77, version=9, name="hijacked", group="239.255.8.8",
                               origin=own), source=own)
    copy = announce(text, source=own, msg_hash=ours["msg_hash"])  # our own packet, replayed
    files = [write(tmp_path, n, d) for n, d in
             (("d", deletion), ("h", hijack), ("c", copy))]
    netns_send(other.name, "239.255.255.255", files, o_if)  # another host
    netns_send(home.name, "239.255.255.255", files, h_if)  # another process on sapd's host
    wait_for(lambda: sum(sapd.stats()["drops"].values()) + sapd.stats()["packets"]["new"]
             >= 6, 5, what=f"all six forged packets counted; stats {sapd.stats()}")

    def local_unchanged() -> None:
        shown = sapd.get(f"/v1/sessions/{sid}")["session"]
        assert shown["name"] == "ours" and shown["local"] and shown["version"] == "1", shown
    local_unchanged()
    # what came from the other host is listed as that host's, beside ours, not as ours
    others = [s for s in sapd.sessions() if not s["local"]]
    assert {s["source"] for s in others} <= {other.address()}, others
    assert all(s["header_source"] == own for s in others), others
    sapd.stop()
    sapd.start()
    local_unchanged()
    assert [s["id"] for s in sapd.get("/v1/announcements")["announcements"]] == [sid]


def test_rotating_the_header_source_does_not_defeat_the_rate_limit(
        net: Network, daemons: Any, tmp_path: Path) -> None:
    flooder, listener = net.host("f"), net.host("l")
    f_if, _ = net.link(flooder, listener, 82)
    sapd: Daemon = daemons("sapd", listener).start()
    files = [write(tmp_path, f"p{n}", announce(
        sdp_text(session=n, name=f"flood {n}"),
        source=f"10.{n // 65536 + 1}.{n // 256 % 256}.{n % 256}")) for n in range(5000)]
    netns_send(flooder.name, "239.255.255.255", files, f_if)
    stats: dict[str, Any] = {}

    def all_counted() -> bool:
        nonlocal stats
        stats = sapd.stats()
        # beyond its rate, what has tokens left may still be shed while sapd is behind
        return stats["packets"]["new"] + stats["drops"].get("rate_limited", 0) + \
            stats["drops"].get("shed_receive_backlog", 0) >= 5000
    wait_for(all_counted, 10, what="5,000 datagrams counted")
    # one sender: the burst (200) and about 100 a second, not 5,000 of 5,000
    assert stats["packets"]["new"] < 1000, stats
    assert stats["drops"]["rate_limited"] > 4000, stats
