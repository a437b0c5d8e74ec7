"""sapd A announces, sapd B on another host lists it; update and withdraw cross too."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.daemons import wait_session
from tests.netns.harness import Network, sh
from tests.support import ROOT, script, wait_for

EXAMPLE = (ROOT / "examples" / "lab-tone.sdp").read_text()
V6 = EXAMPLE.replace("c=IN IP4 239.255.10.1/16", "c=IN IP6 ff05::4242").replace(
    "IN IP4 10.200.0.1", "IN IP6 fd00:42::1").replace("Lab tone 1 kHz", "Lab tone v6")


def test_announce_update_withdraw_across_hosts(net: Network, daemons: Any,
                                               tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 40)
    sapd_a = daemons("sapd", a).start()
    sapd_b = daemons("sapd", b).start()
    sdp_file = tmp_path / "tone.sdp"
    sdp_file.write_text(EXAMPLE)
    made = sh(a.name, script("sapctl"), "--socket", str(sapd_a.socket), "announce",
              str(sdp_file), "--json")
    assert made.returncode == 0, made.stderr
    (heard,) = wait_session(sapd_b, lambda s: s["name"] == "Lab tone 1 kHz")
    assert heard["source"] == a.address() and heard["groups"] == ["239.255.10.1"]
    assert heard["scope"] == "ipv4-local" and heard["media"] == ["audio"]
    mine = sapd_a.sessions()[0]
    assert heard["identity"] == mine["identity"]
    listed = sh(b.name, script("sapctl"), "--socket", str(sapd_b.socket), "list")
    assert "Lab tone 1 kHz" in listed.stdout
    sdp_file.write_text(EXAMPLE.replace("1 kHz", "440 Hz"))
    assert sh(a.name, script("sapctl"), "--socket", str(sapd_a.socket), "update", mine["id"],
              str(sdp_file)).returncode == 0
    wait_session(sapd_b, lambda s: s["name"] == "Lab tone 440 Hz")
    time.sleep(1.6)  # past any deletion the update sent
    assert [s["name"] for s in sapd_b.sessions()] == ["Lab tone 440 Hz"]
    gone = time.monotonic()
    assert sh(a.name, script("sapctl"), "--socket", str(sapd_a.socket), "withdraw",
              mine["id"]).returncode == 0
    wait_for(lambda: sapd_b.sessions() == [], 2, what="withdrawn on b")
    assert time.monotonic() - gone < 2


def test_update_is_heard_as_changed_not_deleted_then_new(net: Network, daemons: Any,
                                                         tmp_path: Path) -> None:
    """RFC 2974 section 5: a new version supersedes the old one; a deletion sent with a
    change made other hosts drop the session and list it again as new."""
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 43)
    sapd_a = daemons("sapd", a).start()
    sapd_b = daemons("sapd", b).start()
    events_file = tmp_path / "events.jsonl"
    with events_file.open("wb") as out:
        watch = subprocess.Popen(["ip", "netns", "exec", b.name, script("sapctl"), "--socket",
                                  str(sapd_b.socket), "watch", "--json"], stdout=out)
    try:
        wait_for(lambda: sapd_b.stats()["subscribers"] == 1, 5, what="sapctl watch")
        sdp_file = tmp_path / "tone.sdp"
        sdp_file.write_text(EXAMPLE)
        made = sapd_a.client.send_json("POST", "/v1/announcements",
                                       {"sdp": EXAMPLE, "interval": 1})
        wait_session(sapd_b, lambda s: s["name"] == "Lab tone 1 kHz")
        sdp_file.write_text(EXAMPLE.replace("1 kHz", "440 Hz"))
        assert sh(a.name, script("sapctl"), "--socket", str(sapd_a.socket), "update",
                  made["id"], str(sdp_file)).returncode == 0
        wait_session(sapd_b, lambda s: s["name"] == "Lab tone 440 Hz")
        time.sleep(2.5)  # past any deletion burst (3 x 0.7 s) and a re-announcement
        assert [s["name"] for s in sapd_b.sessions()] == ["Lab tone 440 Hz"]
        assert sapd_b.stats()["drops"].get("stale_deletion", 0) == 0
        # Moving to another scope leaves a SAP group: the old version's deletion goes
        # there, after the new version, so a host hearing both groups drops it as stale.
        sdp_file.write_text(EXAMPLE.replace("1 kHz", "org").replace("239.255.10.1",
                                                                     "239.195.10.1"))
        assert sh(a.name, script("sapctl"), "--socket", str(sapd_a.socket), "update",
                  made["id"], str(sdp_file)).returncode == 0
        wait_for(lambda: sapd_b.stats()["drops"].get("stale_deletion", 0) >= 1, 5,
                 what="the old group's deletion")
        assert [s["name"] for s in sapd_b.sessions()] == ["Lab tone org"]
    finally:
        watch.terminate()
        watch.wait(5)
    seen = [(e["event"], e["session"]["name"])
            for e in map(json.loads, events_file.read_text().splitlines())]
    assert seen == [("new", "Lab tone 1 kHz"), ("changed", "Lab tone 440 Hz"),
                    ("changed", "Lab tone org")], seen
    packets = sapd_b.stats()["packets"]
    assert (packets["new"], packets["changed"], packets["deleted"]) == (1, 2, 0), packets


def test_ipv6_announcement(net: Network, daemons: Any) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 41)
    sapd_a = daemons("sapd", a).start()
    sapd_b = daemons("sapd", b).start()
    made = sapd_a.client.send_json("POST", "/v1/announcements", {"sdp": V6})
    assert made["announcement"]["targets"][0]["sap_group"] == "ff05::2:7ffe"
    (heard,) = wait_session(sapd_b, lambda s: s["name"] == "Lab tone v6")
    assert heard["groups"] == ["ff05::4242"] and heard["scope"] == "ipv6-site-local"
    assert heard["source"].startswith("fd00:")
    sapd_a.client.request("DELETE", f"/v1/announcements/{made['id']}")
    wait_for(lambda: sapd_b.sessions() == [], 2, what="v6 withdrawn")


def test_three_hosts_on_one_link(net: Network, daemons: Any) -> None:
    hosts = [net.host(n) for n in ("a", "b", "c")]
    net.bridge(hosts, 42)
    sapds = [daemons("sapd", h).start() for h in hosts]
    made = sapds[0].client.send_json("POST", "/v1/announcements", {"sdp": EXAMPLE})
    for other in sapds[1:]:
        wait_session(other, lambda s: s["name"] == "Lab tone 1 kHz")
    sapds[0].client.request("DELETE", f"/v1/announcements/{made['id']}")
    for other in sapds[1:]:
        wait_for(lambda o=other: o.sessions() == [], 2, what="withdrawn on both")
