"""RAVENNA ingest against real peers on a veth link: avahi-daemon + avahi-publish
advertise ``_ravenna_session._sub._rtsp._tcp`` in one namespace, GStreamer's RTSP server
(or a scripted one) answers there; sapd in the other namespace lists what it describes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon, netns_send
from tests.netns.harness import Host, Network
from tests.packets import announce, sdp_text
from tests.ravenna_peers import Avahi, GstPeer, ScriptPeer, need_peers
from tests.support import wait_for

CONFIG = "[ravenna]\nperiod = 1.0\nread_timeout = 2.0\nconnect_timeout = 2.0\n"


@pytest.fixture
def device(net: Network, tmp_path: Path) -> Iterator[tuple[Host, Host, Avahi]]:
    """(the RAVENNA device's host, sapd's host, the device's avahi)."""
    need_peers()
    dev, listener = net.host("dev"), net.host("sapd")
    net.link(dev, listener, 40)
    avahi = Avahi(dev.name, tmp_path)
    try:
        yield dev, listener, avahi
    finally:
        avahi.close()


def ravenna_rows(sapd: Daemon) -> list[dict[str, Any]]:
    return [s for s in sapd.sessions()
            if any(v["via"] == "ravenna" for v in s["heard_via"])]


def sdp_of(sapd: Daemon, sid: str) -> str:
    text: str = sapd.get(f"/v1/sessions/{sid}")["sdp"]
    return text


def gstreamer_sdp(sapd: Daemon) -> str:
    """The one RAVENNA row's SDP, or "" between rows: GStreamer writes a new random o=
    session id into every DESCRIBE's answer, so its row is replaced each period."""
    rows = ravenna_rows(sapd)
    if len(rows) != 1:
        return ""
    try:
        return sdp_of(sapd, rows[0]["id"])
    except ClientError:
        return ""


def test_gstreamer_session_listed_updated_on_redescribe_and_removed_on_withdrawal(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    dev, listener, avahi = device
    peer = GstPeer(dev.name, tmp_path, "Studio A 1", 8554)
    try:
        sapd = daemons("sapd", listener, config=CONFIG).start()
        published = avahi.publish("Studio A 1", 8554)
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="the RAVENNA session listed")
        (row,) = ravenna_rows(sapd)
        (via,) = row["heard_via"]
        assert via["via"] == "ravenna" and via["source"] == dev.address()
        assert via["url"] == f"rtsp://{dev.address()}:8554/by-name/Studio%20A%201"
        assert via["service"] == "Studio A 1"
        assert row["groups"] == ["239.69.1.1"] and row["media"] == ["audio"]
        wait_for(lambda: "a=rtpmap:98 L24/48000/2" in gstreamer_sdp(sapd), 5,
                 what="the served SDP")
        # GStreamer sends no ANNOUNCE: the change is found by the next DESCRIBE
        peer.channels(1)
        wait_for(lambda: "L24/48000/1" in gstreamer_sdp(sapd), 15,
                 what="the changed SDP taken by a re-DESCRIBE")
        avahi.withdraw(published)
        wait_for(lambda: ravenna_rows(sapd) == [], 15, what="the withdrawn session gone")
        stats = sapd.stats()["ravenna"]
        assert stats["state"] == "on" and stats["sdps"]["new"] >= 1
    finally:
        peer.close()


def write_sdp(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_scripted_announce_updates_the_row_and_sap_of_the_same_stream_merges(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    dev, listener, avahi = device
    first = write_sdp(tmp_path / "v1.sdp", sdp_text(session=77, version=1, name="Mixer out",
                                                    origin=dev.address()))
    peer = ScriptPeer(dev.name, tmp_path, "announce", 8600, first)
    try:
        # a long period: only an ANNOUNCE can bring the change in time
        sapd = daemons("sapd", listener, config="[ravenna]\nperiod = 600.0\n").start()
        avahi.publish("Mixer out", 8600)
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="described")
        second = write_sdp(tmp_path / "v2.sdp", sdp_text(session=77, version=2,
                                                         name="Mixer out (renamed)",
                                                         origin=dev.address()))
        assert peer.command(f"announce {second}") == "sent 1"
        wait_for(lambda: [s["name"] for s in ravenna_rows(sapd)] == ["Mixer out (renamed)"],
                 10, what="the ANNOUNCEd SDP taken")
        # the same stream on SAP from the same host: one row, heard both ways
        packet = tmp_path / "sap"
        packet.write_bytes(announce(sdp_text(session=77, version=2, name="Mixer out (renamed)",
                                             origin=dev.address()), source=dev.address()))
        ia = next(iter(dev.interfaces))
        netns_send(dev.name, "239.255.255.255", [packet], ia)

        def merged() -> bool:
            rows = sapd.sessions()
            return len(rows) == 1 and sorted(v["via"] for v in rows[0]["heard_via"]) == [
                "ravenna", "sap"]
        wait_for(merged, 10, what="one row heard via sap and ravenna")
    finally:
        peer.close()


@pytest.mark.parametrize(("mode", "reason"), [
    ("endless_headers", "rtsp_header_too_large"),
    ("huge_length", "rtsp_body_too_large"),
    ("slowloris", "timeout"),
    ("garbage_sdp", "invalid_sdp"),
])
def test_hostile_rtsp_server_is_bounded_counted_and_costs_nothing_stored(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path, mode: str,
        reason: str) -> None:
    dev, listener, avahi = device
    good = write_sdp(tmp_path / "good.sdp", sdp_text(session=5, name="Good one",
                                                     origin=dev.address()))
    honest = ScriptPeer(dev.name, tmp_path, "announce", 8601, good)
    hostile = ScriptPeer(dev.name, tmp_path, mode, 8602, good)
    try:
        sapd = daemons("sapd", listener, config=CONFIG).start()
        avahi.publish("Good one", 8601)
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="the honest session")
        avahi.publish("Hostile", 8602)
        wait_for(lambda: sapd.stats()["ravenna"]["refusals"].get(reason, 0) >= 1, 20,
                 what=f"{mode} refused as {reason}")
        assert [s["name"] for s in ravenna_rows(sapd)] == ["Good one"]
        assert sapd.get("/v1/health")["status"] == "ok"
        metrics = sapd.client.request("GET", "/metrics").body.decode()
        assert f'sapd_ravenna_refusals_total{{reason="{reason}"}}' in metrics
    finally:
        hostile.close()
        honest.close()


def test_announce_on_sap_reannounces_once_and_stops_when_the_device_is_on_sap(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    """The loop guard: our re-announcement never comes back as a row of ours, and a
    session the device itself announces on SAP is not re-announced by us."""
    dev, listener, avahi = device
    text = sdp_text(session=88, name="Stage box", group="239.69.8.8", origin=dev.address())
    peer = ScriptPeer(dev.name, tmp_path, "announce", 8603, write_sdp(tmp_path / "s.sdp", text))
    try:
        relay = daemons("sapd", listener, name="relay",
                        config="[ravenna]\nperiod = 600.0\nannounce_on_sap = true\n").start()
        # a SAP-only sapd on the device's side of the link hears what the relay sends
        watcher = daemons("sapd", dev, name="watcher",
                          config="[ravenna]\nenabled = false\n").start()
        avahi.publish("Stage box", 8603)
        relay_address = listener.address()

        def relayed() -> list[dict[str, Any]]:
            return [s for s in watcher.sessions() if s["name"] == "Stage box"
                    and s["source"] == relay_address]
        wait_for(relayed, 30, what="the RAVENNA session re-announced on SAP")
        (row,) = relay.sessions()  # our own packets are not listed back
        assert [v["via"] for v in row["heard_via"]] == ["ravenna"]
        # the device starts announcing it on SAP itself: we stop (and send the deletion)
        packet = tmp_path / "own"
        packet.write_bytes(announce(text, source=dev.address()))
        ia = next(iter(dev.interfaces))
        netns_send(dev.name, "239.255.255.255", [packet], ia)
        wait_for(lambda: sorted(v["via"] for v in relay.sessions()[0]["heard_via"])
                 == ["ravenna", "sap"], 10, what="the device heard on SAP by the relay")
        wait_for(lambda: relayed() == [], 10, what="the re-announcement withdrawn")
        assert [s["source"] for s in watcher.sessions()] == [dev.address()]
    finally:
        peer.close()


def test_a_server_that_mounted_the_name_as_written_is_found_by_the_second_try(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    dev, listener, avahi = device
    text = sdp_text(session=3, name="Desk main", origin=dev.address())
    peer = ScriptPeer(dev.name, tmp_path, "literal_path", 8604,
                      write_sdp(tmp_path / "d.sdp", text))
    try:
        sapd = daemons("sapd", listener, config=CONFIG).start()
        avahi.publish("Desk: Main", 8604)
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="described on the 2nd try")
        (via,) = ravenna_rows(sapd)[0]["heard_via"]
        assert via["url"] == f"rtsp://{dev.address()}:8604/by-name/Desk:%20Main"
    finally:
        peer.close()


def test_an_announce_flood_is_rate_limited_and_the_latest_is_listed(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    """3,000 ANNOUNCEs as fast as the server can send them: thousands of directory
    changes a second before; now the host's SAP bucket, the refusals counted, the row
    never dropped, the latest version listed, and the same host's SAP still heard."""
    dev, listener, avahi = device
    first = write_sdp(tmp_path / "f.sdp", sdp_text(session=41, version=1, name="Flood",
                                                   origin=dev.address()))
    peer = ScriptPeer(dev.name, tmp_path, "flood_announce", 8605, first)
    try:
        sapd = daemons("sapd", listener, config=CONFIG).start()
        avahi.publish("Flood", 8605)
        wait_for(lambda: sapd.stats()["ravenna"]["refusals"].get("rate_limited", 0) >= 1, 20,
                 what="the flood rate limited")
        wait_for(lambda: [s["version"] for s in ravenna_rows(sapd)] == ["3001"], 20,
                 what="the latest version listed")
        changed = sapd.stats()["ravenna"]["sdps"].get("changed", 0)
        assert changed < 1000, f"{changed} changes taken from one flood"
        assert sapd.get("/v1/health")["status"] == "ok"
        packet = tmp_path / "sap"
        packet.write_bytes(announce(sdp_text(session=42, name="Same host on SAP",
                                             origin=dev.address()), source=dev.address()))
        netns_send(dev.name, "239.255.255.255", [packet], next(iter(dev.interfaces)))
        wait_for(lambda: "Same host on SAP" in [s["name"] for s in sapd.sessions()], 10,
                 what="the host's SAP announcement listed")
    finally:
        peer.close()


def test_a_server_closing_after_each_answer_is_not_reconnected_in_a_loop(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    dev, listener, avahi = device
    sdp = write_sdp(tmp_path / "c.sdp", sdp_text(session=43, name="Closer",
                                                 origin=dev.address()))
    peer = ScriptPeer(dev.name, tmp_path, "close_each", 8606, sdp)
    try:
        sapd = daemons("sapd", listener, config=CONFIG).start()
        avahi.publish("Closer", 8606)
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="described")
        before = sapd.stats()["ravenna"]["sdps"].get("refresh", 0)
        time.sleep(3.0)
        asked = sapd.stats()["ravenna"]["sdps"].get("refresh", 0) - before
        assert asked <= 8, f"{asked} DESCRIBEs in 3 s with period = 1"
        assert len(ravenna_rows(sapd)) == 1
    finally:
        peer.close()


def test_sigkill_with_ravenna_rows_keeps_one_row_and_a_gone_device_expires_after_grace(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    """SIGKILL while a RAVENNA row is listed: after the restart it is one row, found
    again (kept past the grace); killed again and the device withdrawn meanwhile (nobody
    tells sapd), the stored row goes after the grace."""
    dev, listener, avahi = device
    sdp = write_sdp(tmp_path / "k.sdp", sdp_text(session=44, name="Kept",
                                                 origin=dev.address()))
    peer = ScriptPeer(dev.name, tmp_path, "announce", 8607, sdp)
    try:
        sapd = daemons("sapd", listener, config=CONFIG + "grace = 3.0\n").start()
        published = avahi.publish("Kept", 8607)
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="described")
        time.sleep(0.5)  # stored
        sapd.kill()
        sapd.start()
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 10, what="listed after SIGKILL")
        time.sleep(5.0)  # past the grace: found again, so kept
        rows = sapd.sessions()
        assert [r["name"] for r in rows] == ["Kept"]
        assert rows[0]["expires"] is None
        sapd.kill()
        avahi.withdraw(published)
        sapd.start()
        wait_for(lambda: sapd.sessions() == [], 10, what="the gone device's row expired")
    finally:
        peer.close()


def test_a_service_pointing_at_sapds_own_loopback_is_refused_and_counted(
        device: tuple[Host, Host, Avahi], daemons: Any, tmp_path: Path) -> None:
    """A device's mDNS says its session is at 127.0.0.1 (the A record is the device's
    to write): sapd sent DESCRIBEs to its own host's loopback services. Now counted as
    bad_address and never connected to; an honest session beside it is listed."""
    dev, listener, avahi = device
    good = write_sdp(tmp_path / "g.sdp", sdp_text(session=45, name="Honest",
                                                  origin=dev.address()))
    honest = ScriptPeer(dev.name, tmp_path, "announce", 8608, good)
    # what sapd would reach on its own loopback if it followed the record
    lure = ScriptPeer(listener.name, tmp_path, "announce", 8609, write_sdp(
        tmp_path / "l.sdp", sdp_text(session=46, name="Own loopback", origin="127.0.0.1")))
    try:
        sapd = daemons("sapd", listener, config=CONFIG).start()
        avahi.publish_address("lure.local", "127.0.0.1")
        avahi.publish("Lure", 8609, host="lure.local")
        avahi.publish("Honest", 8608)
        wait_for(lambda: sapd.stats()["ravenna"]["refusals"].get("bad_address", 0) >= 1, 20,
                 what="the loopback record refused")
        wait_for(lambda: len(ravenna_rows(sapd)) == 1, 20, what="the honest session")
        time.sleep(1.0)
        assert [s["name"] for s in ravenna_rows(sapd)] == ["Honest"]
    finally:
        lure.close()
        honest.close()
