"""LDAP publication against a real slapd (tests/ldap_server.py): sessions heard over
multicast become entries that plain ldapsearch finds; they follow the session; sapd
resynchronises after slapd restarts; a dead sapd's entries age out by TTL (dds)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, send_local_multicast, wait_session
from tests.ldap_server import BASE, SERVICE_DN, Slapd
from tests.packets import announce, delete, sdp_text
from tests.support import ROOT, run, script, wait_for

EXAMPLE = ROOT / "examples" / "lab-tone.sdp"
TTL = 10  # seconds: the least [ldap] ttl allows; dds checks every second


def video_sdp(session: int, name: str) -> str:
    return (f"v=0\r\no=- {session} 1 IN IP4 10.0.0.1\r\ns={name}\r\nc=IN IP4 239.255.9.9/32"
            "\r\nt=0 0\r\nm=video 5006 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n")


def ldap_config(slapd: Slapd, profile: str = "sapd") -> str:
    return (f'[ldap]\nurl = "{slapd.url}"\nbase = "{BASE}"\nbind_dn = "{SERVICE_DN}"\n'
            f'password_file = "{slapd.password_file}"\nprofile = "{profile}"\nttl = {TTL}\n')


def ldap_stats(daemon: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = daemon.stats()["ldap"]
    return result


def test_heard_sessions_are_found_by_media_and_name_and_follow_the_session(
        slapd: Slapd, sapd_factory: Any) -> None:
    daemon = sapd_factory(config=ldap_config(slapd)).start()
    send_local_multicast(announce(sdp_text(session=1, name="Studio A")), "239.255.255.255")
    send_local_multicast(announce(video_sdp(2, "Camera 2")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 2, 10, what="two entries in slapd")
    audio = "(&(objectClass=sapdSession)(media=audio))"
    assert slapd.values(audio, "sapdName") == ["Studio A"]
    assert slapd.values(audio, "sapdCodec") == ["L24/48000/2"]
    assert slapd.values("(&(objectClass=sapdSession)(sapdMedia=video))", "cn") == ["Camera 2"]
    assert slapd.values("(sapdName=studio*)", "sapdGroup") == ["239.255.1.1"]
    assert slapd.values("(name=Camera 2)", "sapdCodec") == ["H264/90000"]  # sapdName SUP name
    (entry,) = slapd.search("(sapdName=Studio A)").stdout.split("\n\n")[:1]
    assert "sapdOrigin: - 1 IN IP4 10.0.0.1" in entry and "sapdVersion: 1" in entry
    assert "sapdSdp:: " in entry  # the SDP itself, base64 (CRLF in it)
    assert "objectClass: dynamicObject" in entry
    assert "entryTtl" in slapd.search("(sapdName=Studio A)", "entryTtl").stdout

    send_local_multicast(announce(sdp_text(session=1, version=2, name="Studio A2")),
                         "239.255.255.255")
    wait_for(lambda: slapd.values("(sapdOrigin=- 1 IN IP4 10.0.0.1)", "sapdName")
             == ["Studio A2"], 10, what="the changed entry")
    assert slapd.values("(sapdOrigin=- 1 IN IP4 10.0.0.1)", "sapdVersion") == ["2"]
    assert slapd.count() == 2  # changed in place, not beside

    send_local_multicast(delete(session=1, version=2), "239.255.255.255")
    wait_for(lambda: slapd.count() == 1, 10, what="the deleted session's entry removed")
    assert slapd.values("(objectClass=sapdSession)", "cn") == ["Camera 2"]
    stats = ldap_stats(daemon)
    assert stats["state"] == "up" and stats["dynamic"] and stats["entries"] == 1
    assert stats["operations"]["add"] == 2 and stats["operations"]["delete"] == 1
    health = daemon.get("/v1/health")
    assert health["ldap"] == "up" and health["status"] == "ok"
    metrics = daemon.client.request("GET", "/metrics").body.decode()
    assert "sapd_ldap_up 1" in metrics and "sapd_ldap_entries 1" in metrics
    shown = run(script("sapctl"), "--socket", str(daemon.socket), "stats", check=True).stdout
    assert "ldap:     up   entries 1" in shown and "started=1" in shown


def test_slapd_killed_and_restarted_sapd_resynchronises(slapd: Slapd,
                                                        sapd_factory: Any) -> None:
    daemon = sapd_factory(config=ldap_config(slapd)).start()
    for i in range(1, 4):
        send_local_multicast(announce(sdp_text(session=i, name=f"s{i}")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 3, 10, what="three entries")
    slapd.kill()
    # while slapd is away: one session deleted, one new, one changed
    send_local_multicast(delete(session=1), "239.255.255.255")
    send_local_multicast(announce(sdp_text(session=4, name="s4")), "239.255.255.255")
    send_local_multicast(announce(sdp_text(session=2, version=2, name="s2 v2")),
                         "239.255.255.255")
    wait_session(daemon, lambda s: s["name"] == "s4")
    wait_session(daemon, lambda s: s["name"] == "s2 v2")
    wait_for(lambda: daemon.sessions() and len(daemon.sessions()) == 3, 5,
             what="three sessions in sapd")
    wait_for(lambda: ldap_stats(daemon)["state"] == "down", 10, what="sapd sees slapd down")
    health = daemon.get("/v1/health")
    assert health["ldap"] == "down" and health["status"] == "degraded"
    slapd.start()
    wait_for(lambda: ldap_stats(daemon)["resyncs"].get("reconnected") == 1, 40,
             what="a resynchronisation after the restart")
    assert sorted(slapd.values("(objectClass=sapdSession)", "cn")) == ["s2 v2", "s3", "s4"]
    assert slapd.count() == 3  # no duplicates, no leftovers
    stats = ldap_stats(daemon)
    assert stats["last_resync"]["removed"] == 1 and stats["last_resync"]["added"] == 1
    assert stats["last_resync"]["changed"] == 1 and stats["last_resync"]["kept"] == 1
    assert stats["errors"].get("server_down", 0) >= 1 and stats["state"] == "up"
    assert any(e.get("event") == "LDAP resynchronised" and e.get("reason") == "reconnected"
               for e in daemon.log_events())
    metrics = daemon.client.request("GET", "/metrics").body.decode()
    assert 'sapd_ldap_resyncs_total{reason="reconnected"} 1' in metrics


def test_sapd_killed_its_entries_expire_by_ttl(slapd: Slapd, sapd_factory: Any) -> None:
    daemon = sapd_factory(config=ldap_config(slapd)).start()
    send_local_multicast(announce(sdp_text(session=1, name="orphan")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 1, 10, what="the entry")
    time.sleep(TTL / 2)  # refreshed while sapd lives: still there past the first third
    assert slapd.count() == 1
    daemon.kill()
    killed = time.monotonic()
    wait_for(lambda: slapd.count() == 0, TTL + 5, interval=0.5, what="expiry by TTL")
    assert time.monotonic() - killed >= TTL / 3  # aged out, not removed by anyone


def test_restarted_sapd_removes_leftovers_without_duplicates(slapd: Slapd,
                                                             sapd_factory: Any) -> None:
    config = ldap_config(slapd)
    daemon = sapd_factory(config=config).start()
    for i in range(1, 3):
        send_local_multicast(announce(sdp_text(session=i, name=f"k{i}")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 2, 10, what="two entries")
    daemon.stop()
    again = sapd_factory(config=config).start()
    wait_for(lambda: ldap_stats(again)["resyncs"].get("started") == 1, 10, what="resync")
    assert slapd.count() == 2 and ldap_stats(again)["last_resync"]["kept"] == 2


def test_mstapi_profile_entries_carry_the_sdp_blob(slapd: Slapd, sapd_factory: Any) -> None:
    sapd_factory(config=ldap_config(slapd, profile="mstapi")).start()
    send_local_multicast(announce(sdp_text(session=7, name="Rendezvous")), "239.255.255.255")
    found = "(&(objectClass=msTAPI-RtConference)(msTAPI-ProtocolId=SDP))"
    wait_for(lambda: slapd.count(found) == 1, 10, what="an msTAPI-RtConference entry")
    entry = slapd.search(found, "msTAPI-uid", "msTAPI-ConferenceBlob", "sapdMedia").stdout
    assert entry.startswith("dn: msTAPI-uid=") and "msTAPI-ConferenceBlob:: " in entry
    assert "sapdMedia: audio" in entry


@pytest.fixture
def tls_slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path / "slapd", tls=True).start()
    server.create_base()
    yield server
    server.stop()


@pytest.mark.parametrize("how", ["ldaps", "starttls"])
def test_tls_with_the_configured_ca(tls_slapd: Slapd, sapd_factory: Any, how: str) -> None:
    url = tls_slapd.ldaps_url if how == "ldaps" else tls_slapd.url
    config = ldap_config(tls_slapd).replace(f'url = "{tls_slapd.url}"', f'url = "{url}"')
    config += f'tls = {{ starttls = {str(how == "starttls").lower()}, ' \
              f'ca_file = "{tls_slapd.ca_file}" }}\n'
    sapd_factory(config=config).start()
    send_local_multicast(announce(sdp_text(session=3, name="secure")), "239.255.255.255")
    wait_for(lambda: tls_slapd.count() == 1, 10, what="an entry over TLS")


def test_a_server_the_ca_does_not_vouch_for_is_refused(tls_slapd: Slapd, sapd_factory: Any,
                                                      tmp_path: Path) -> None:
    other_ca = Slapd(tmp_path / "other", tls=True).ca_file  # a CA that signed nothing here
    config = ldap_config(tls_slapd).replace(f'url = "{tls_slapd.url}"',
                                            f'url = "{tls_slapd.ldaps_url}"')
    config += f'tls = {{ ca_file = "{other_ca}" }}\n'
    daemon = sapd_factory(config=config).start(wait=False)
    wait_for(lambda: daemon.proc is not None and daemon.socket.exists(), 10, what="socket")
    wait_for(lambda: ldap_stats(daemon)["state"] == "down", 10, what="TLS refused")
    assert ldap_stats(daemon)["errors"].get("server_down", 0) >= 1, ldap_stats(daemon)
    assert daemon.get("/v1/health")["status"] == "degraded"
    assert tls_slapd.count() == 0


def test_a_stalled_server_never_holds_the_receive_path(slapd: Slapd,
                                                       sapd_factory: Any) -> None:
    daemon = sapd_factory(config=ldap_config(slapd) + "queue = 10\n").start()
    send_local_multicast(announce(sdp_text(session=100, name="before")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 1, 10, what="the first entry")
    slapd.pause()
    try:
        for i in range(40):
            send_local_multicast(announce(sdp_text(session=i, name=f"burst {i}")),
                                 "239.255.255.255")
        # sapd hears and lists everything while its LDAP worker waits on the server
        wait_for(lambda: len(daemon.sessions("?limit=1000")) == 41, 10,
                 what="every session listed")
        # at least one: events arrive over several drains, so the worker may start the
        # first resynchronisation (and block on the stalled server) before a second overflow
        wait_for(lambda: ldap_stats(daemon)["overflows"] >= 1, 5, what="the overflow")
        assert ldap_stats(daemon)["queue"] <= 10
    finally:
        slapd.resume()
    wait_for(lambda: ldap_stats(daemon)["resyncs"].get("overflow", 0) >= 1, 20,
             what="a resynchronisation instead of the dropped changes")
    wait_for(lambda: slapd.count() == 41, 20, what="every entry")
    assert any(e.get("event") == "LDAP publication fell behind; resynchronising instead"
               for e in daemon.log_events())


def test_an_expired_session_is_removed(slapd: Slapd, sapd_factory: Any) -> None:
    config = "expiry_floor = 1.0\ndefault_period = 0.1\n" + ldap_config(slapd)
    daemon = sapd_factory(config=config).start()
    send_local_multicast(announce(sdp_text(session=9, name="brief")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 1, 10, what="the entry")
    wait_for(lambda: daemon.stats()["expired"] == 1, 10, what="the session's expiry")
    wait_for(lambda: slapd.count() == 0, 10, what="the expired session's entry removed")
    assert ldap_stats(daemon)["operations"]["delete"] == 1


def test_a_local_announcement_is_published_with_its_owner_and_withdrawn(
        slapd: Slapd, sapd_factory: Any) -> None:
    daemon = sapd_factory(config=ldap_config(slapd)).start()
    made = daemon.client.send_json("POST", "/v1/announcements", {"sdp": EXAMPLE.read_text()})
    wait_for(lambda: slapd.count("(sapdHeardVia=local)") == 1, 10, what="the local entry")
    assert slapd.values("(sapdHeardVia=local)", "sapdOwnerUid") == [str(os.getuid())]
    assert slapd.values("(sapdHeardVia=local)", "sapdName") == ["Lab tone 1 kHz"]
    daemon.client.request("DELETE", f"/v1/announcements/{made['id']}")
    wait_for(lambda: slapd.count() == 0, 10, what="the withdrawn entry removed")


def test_two_sites_share_a_base_without_touching_each_other(slapd: Slapd,
                                                            sapd_factory: Any) -> None:
    a = sapd_factory(config='site = "east"\n' + ldap_config(slapd), name="a").start()
    b = sapd_factory(config='site = "west"\n' + ldap_config(slapd), name="b").start()
    send_local_multicast(announce(sdp_text(session=1, name="shared")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 2, 10, what="one entry per site")
    assert slapd.values("(sapdName=shared)", "sapdSite") == ["east", "west"]
    b.stop()
    # west again, with an empty directory: its own leftover goes, east's entry stays
    again = sapd_factory(config='site = "west"\n' + ldap_config(slapd), name="c").start()
    wait_for(lambda: ldap_stats(again)["resyncs"].get("started") == 1, 10, what="resync")
    assert ldap_stats(again)["last_resync"]["removed"] == 1
    assert slapd.values("(sapdName=shared)", "sapdSite") == ["east"]
    assert ldap_stats(a)["entries"] == 1


def test_a_server_without_dynamic_entries_gets_static_ones(tmp_path: Path,
                                                           sapd_factory: Any) -> None:
    server = Slapd(tmp_path / "slapd", dds=False).start()
    try:
        server.create_base()
        daemon = sapd_factory(config=ldap_config(server)).start()
        send_local_multicast(announce(sdp_text(session=6, name="static")), "239.255.255.255")
        wait_for(lambda: server.count() == 1, 10, what="the entry")
        assert "dynamicObject" not in server.search("(sapdName=static)", "objectClass").stdout
        stats = ldap_stats(daemon)
        assert not stats["dynamic"] and "refresh" not in stats["operations"]
        assert not stats["errors"]
    finally:
        server.stop()


def test_a_password_file_gone_at_reconnect_is_counted_and_recovered_from(
        slapd: Slapd, sapd_factory: Any) -> None:
    daemon = sapd_factory(config=ldap_config(slapd)).start()
    wait_for(lambda: ldap_stats(daemon)["state"] == "up", 10, what="connected")
    password = slapd.password_file.read_text()
    slapd.password_file.unlink()
    slapd.kill()
    slapd.start()  # sapd reconnects, and cannot read its password now
    wait_for(lambda: ldap_stats(daemon)["errors"].get("password_file"), 20,
             what="the password file error counted")
    assert "No such file" in ldap_stats(daemon)["last_error"]
    slapd.password_file.write_text(password)
    send_local_multicast(announce(sdp_text(session=8, name="after")), "239.255.255.255")
    wait_for(lambda: slapd.count() == 1, 60, what="published once the file is back")
    assert ldap_stats(daemon)["state"] == "up"
