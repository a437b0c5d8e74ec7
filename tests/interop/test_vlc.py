"""VLC 3.0 as a real peer: what it announces sapd lists and expires, and what sapd
announces (every scope, IPv6 and compressed too) VLC's SAP discovery lists."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, wait_session
from tests.interop.vlc import (
    rc,
    sap_playlist,
    start_vlc,
    stop_vlc,
    tone_file,
    vlc_home,
    vlc_log,
    wait_rc_ready,
)
from tests.netns.harness import Network, sh
from tests.support import free_udp_port, script, wait_for

# With VLC announcing every second, sapd measures a 1 s period and expires the session
# after 10 periods of silence (the floor below is lower, so the period decides).
QUICK_EXPIRY = "expiry_floor = 1.0\ndefault_period = 1.0\n"


@pytest.fixture
def home() -> Iterator[Path]:
    with vlc_home() as path:
        yield path


# VLC derives the SAP group from its destination's scope, IPv6 included.
VLC_ANNOUNCES = {
    # destination: (name, scope, SAP group)
    "239.255.12.1": ("VLC tone v4", "ipv4-local", "239.255.255.255"),
    "ff0e::12:1": ("VLC tone v6", "ipv6-global", "ff0e::2:7ffe"),
}


def test_vlc_announcement_is_listed_and_expires_after_vlc_stops(
        net: Network, daemons: Any, home: Path) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 70)
    v4, v6 = a.interfaces[next(iter(a.interfaces))]
    sapd: Daemon = daemons("sapd", b, config=QUICK_EXPIRY).start()
    tone = tone_file(home)
    vlcs = [start_vlc(a.name, home, "-I", "dummy", str(tone), "--sap-interval", "1", "--sout",
                      f"#rtp{{dst={dst},port=5004,"
                      f'sdp=sap://,name="{name}"}}')
            for dst, (name, _, _) in VLC_ANNOUNCES.items()]
    try:
        for dst, (name, scope, sap_group) in VLC_ANNOUNCES.items():
            try:
                (session,) = wait_session(sapd, lambda s, n=name: s["name"] == n, timeout=30)
            except AssertionError:
                raise AssertionError(f"{name} not listed; sapd stats: {sapd.stats()}\n"
                                     f"sapd log:\n{sapd.logs()[-3000:]}\n"
                                     f"VLC log:\n{vlc_log(home)}") from None
            assert session["source"] == (v6 if ":" in dst else v4)
            assert session["groups"] == [dst] and session["media"] == ["audio"]
            assert (session["scope"], session["sap_group"]) == (scope, sap_group)
            detail = sapd.get(f"/v1/sessions/{session['id']}")
            # VLC's o= numbers are 64-bit NTP values above 2^63: kept exactly.
            origin = detail["description"]["origin"]
            assert int(origin["session_id"]) > 2**63, origin
            assert (f"o=- {origin['session_id']} {origin['version']} IN "
                    f"{origin['addrtype']} ") in detail["sdp"], (origin, detail["sdp"])
            # ... in the record too (JSON number or string, but never rounded)
            assert str(session["version"]) == str(origin["version"]), session
    finally:
        for vlc in vlcs:
            stop_vlc(vlc)
    stopped = time.monotonic()
    # VLC sends no deletion: the sessions must expire, about 10 periods after the last one.
    wait_for(lambda: sapd.sessions() == [], 20, what="VLC's sessions expired")
    silence = time.monotonic() - stopped
    assert silence > 5, f"gone {silence:.1f} s after VLC stopped: deleted, not expired"
    stats = sapd.stats()
    assert stats["packets"].get("deleted", 0) == 0 and stats["expired"] == 2, stats


SCOPES = {
    # name: (c= line, announcement options)
    "VLC sees global v4": ("c=IN IP4 224.2.200.1/127", {}),
    "VLC sees local v4": ("c=IN IP4 239.255.12.2/16", {}),
    "VLC sees org v4": ("c=IN IP4 239.195.12.3/16", {}),
    "VLC sees compressed": ("c=IN IP4 239.255.12.4/16", {"compress": True}),
    "VLC sees global v6": ("c=IN IP6 ff0e::12:5", {}),
    "VLC sees org v6": ("c=IN IP6 ff08::12:6", {}),
    "VLC sees site v6": ("c=IN IP6 ff05::12:7", {}),
}


def scope_sdp(number: int, name: str, connection: str, origin_address: str) -> str:
    family = "IP6" if "IP6" in connection else "IP4"
    return (f"v=0\r\no=- {4200 + number} 1 IN {family} {origin_address}\r\ns={name}\r\n"
            f"{connection}\r\nt=0 0\r\nm=audio 5004 RTP/AVP 96\r\n"
            "a=rtpmap:96 L24/48000/2\r\n")


def test_vlc_lists_what_sapd_announces_on_every_scope(
        net: Network, daemons: Any, home: Path) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 71)
    v4, v6 = a.interfaces[next(iter(a.interfaces))]
    sapd: Daemon = daemons("sapd", a).start()
    for number, (name, (connection, options)) in enumerate(SCOPES.items()):
        origin = v6 if "IP6" in connection else v4
        made = sapd.client.send_json("POST", "/v1/announcements", {
            "sdp": scope_sdp(number, name, connection, origin), "interval": 1, **options})
        assert made["id"], made
    port = free_udp_port()
    vlc = start_vlc(b.name, home, "-I", "rc", "--rc-host", f"127.0.0.1:{port}",
                    "--services-discovery", "sap")
    try:
        wait_rc_ready(b.name, port, vlc, home)
        listed: set[str] = set()

        def all_listed() -> bool:
            nonlocal listed
            listed = set(sap_playlist(b.name, port))
            return listed == set(SCOPES)
        try:
            wait_for(all_listed, 30, interval=0.5, what="VLC's playlist")
        except AssertionError:
            raise AssertionError(f"VLC lists only {sorted(listed)}; missing "
                                 f"{sorted(set(SCOPES) - listed)}\n"
                                 f"{rc(b.name, port, 'playlist')}\n{vlc_log(home)}") from None
    finally:
        stop_vlc(vlc)


def test_vlc_keeps_listing_a_session_through_sapctl_update(
        net: Network, daemons: Any, home: Path, tmp_path: Path) -> None:
    a, b = net.host("a"), net.host("b")
    net.link(a, b, 72)
    sapd: Daemon = daemons("sapd", a).start()
    v4 = a.address()
    before = scope_sdp(0, "VLC sees 1 kHz", "c=IN IP4 239.255.12.8/16", v4)
    made = sapd.client.send_json("POST", "/v1/announcements", {"sdp": before, "interval": 1})
    port = free_udp_port()
    vlc = start_vlc(b.name, home, "-I", "rc", "--rc-host", f"127.0.0.1:{port}",
                    "--services-discovery", "sap")
    try:
        wait_rc_ready(b.name, port, vlc, home)
        wait_for(lambda: "VLC sees 1 kHz" in sap_playlist(b.name, port), 20, interval=0.5,
                 what="VLC lists the first version")
        changed = tmp_path / "changed.sdp"
        changed.write_text(before.replace("1 kHz", "440 Hz"))
        assert sh(a.name, script("sapctl"), "--socket", str(sapd.socket), "update",
                  made["id"], str(changed)).returncode == 0
        # VLC keys sessions on (source, hash) and ignores deletions: the new version
        # appears beside the old one, which VLC times out on its own.
        deadline = time.monotonic() + 10
        shown = [sap_playlist(b.name, port)]
        while "VLC sees 440 Hz" not in shown[-1]:
            assert shown[-1], f"VLC listed nothing during the update: {shown}"
            assert time.monotonic() < deadline, f"VLC never listed the new version: {shown}"
            time.sleep(0.3)
            shown.append(sap_playlist(b.name, port))
    finally:
        stop_vlc(vlc)
