"""Hostile RAVENNA devices and networks against the sans-IO layers (core, codec, engine):
each test is named after a defect found by attacking them, and failed before its fix."""

from __future__ import annotations

import pytest

from sapd.bridges import ravenna_core as core
from sapd.bridges import rtsp
from sapd.bridges.ravenna_core import Bounds, Describe, Drop, RavennaCore
from sapd.lifecycle import Engine
from tests.packets import sdp_text

HOST = "10.0.0.5"
URL = "rtsp://10.0.0.5:8554/by-name/A"


def test_host_cap_was_bypassed_by_services_resolved_before_any_was_described() -> None:
    """10,000 services from one host resolve within a second, long before the first
    DESCRIBE is answered: the cap counted described sessions only, so all got through."""
    c = RavennaCore(Bounds(max_per_host=2))
    names = [f"S{n}" for n in range(10)]
    for name in names:
        c.added(name, 0.0)
    describes = [a for name in names for a in c.resolved(name, HOST, 8554, 0.0)
                 if isinstance(a, Describe)]
    assert len(describes) == 2
    assert c.refusals[core.HOST_CAP] == 8


def test_a_record_change_during_a_describe_was_missed_for_a_whole_period() -> None:
    """The device changed its SDP and said so on mDNS (TXT) while our DESCRIBE was in
    flight: that answer may predate the change, yet the next DESCRIBE came a period later."""
    c = RavennaCore(Bounds(period=30.0))
    c.added("A", 0.0)
    c.resolved("A", HOST, 8554, 0.0)  # BUSY
    assert c.updated("A", 0.5) == []  # in flight: nothing more at once
    c.described("A", "sid-a", 1.0)
    assert c.next_timer() == 1.0  # asked again now, not at 31.0


def test_an_address_change_during_a_describe_dropped_the_row() -> None:
    """A new A record while a DESCRIBE is in flight closed that DESCRIBE's connection:
    the failure dropped the row (listed, gone, listed again a second later)."""
    c = RavennaCore(Bounds(period=30.0))
    c.added("A", 0.0)
    c.resolved("A", HOST, 8554, 0.0)
    c.described("A", "sid-a", 1.0)
    assert c.due(31.0) == [Describe("A", HOST, 8554)]  # BUSY, held connection too
    assert c.resolved("A", "10.0.0.6", 8554, 31.5) == []  # no Close of the in-flight one
    assert c.described("A", "sid-a", 32.0) == []
    assert c.due(32.0) == [Describe("A", "10.0.0.6", 8554)]  # the new address, at once


def test_withdrawing_one_of_two_services_with_one_session_dropped_the_other() -> None:
    """Two service names serving the same SDP (one row): withdrawing one removed the
    row while the other still served it."""
    c = RavennaCore()
    for name in ("A", "B"):
        c.added(name, 0.0)
        c.resolved(name, HOST, 8554, 0.0)
        c.described(name, "sid", 1.0)
    assert not [a for a in c.removed("A", 2.0) if isinstance(a, Drop)]
    assert c.removed("B", 3.0)[-1] == Drop("B", "sid")


def test_a_unicode_digit_in_content_length_raised_an_untyped_error() -> None:
    """'\u00b2'.isdigit() is true and int('\u00b2') raises ValueError: the read task died
    silently instead of counting rtsp_malformed and closing."""
    parser = rtsp.RtspParser()
    with pytest.raises(rtsp.RtspError) as refused:
        parser.feed("RTSP/1.0 200 OK\r\nContent-Length: \u00b2\r\n\r\n".encode())
    assert refused.value.reason == rtsp.MALFORMED


def test_a_unicode_digit_in_cseq_raised_an_untyped_error() -> None:
    """The same in CSeq: read when the answer is matched to its request. Not a number
    we sent, so no CSeq at all."""
    (message,) = rtsp.RtspParser().feed("RTSP/1.0 200 OK\r\nCSeq: \u00b9\r\n\r\n".encode())
    assert message.cseq is None


def test_a_device_whose_o_version_went_back_stayed_listed_with_its_old_sdp() -> None:
    """A device rebooted and serves its session from version 1 again: on a row heard
    over RAVENNA only there is no SAP side whose newer version should win, yet the old
    content stayed for as long as the service lived (refreshed, never replaced)."""
    e = Engine()
    e.put_ravenna(sdp_text(version=5, name="before reboot"), HOST, URL, "A", 0.0)
    outcome, _ = e.put_ravenna(sdp_text(version=1, name="after reboot"), HOST, URL, "A", 30.0)
    assert outcome == "changed"
    assert [r.name for r in e.records()] == ["after reboot"]


def test_a_described_service_moved_onto_a_full_host_lets_go_of_its_row() -> None:
    c = RavennaCore(Bounds(max_per_host=1))
    for name, host in (("A", HOST), ("B", "10.0.0.6")):
        c.added(name, 0.0)
        c.resolved(name, host, 8554, 0.0)
        c.described(name, f"sid-{name}", 1.0)
    assert c.resolved("B", HOST, 8554, 2.0) == [core.Close("B"), Drop("B", "sid-B")]
    assert c.refusals[core.HOST_CAP] == 1 and c.session_of("B") is None
    assert c.due(100.0) == [Describe("A", HOST, 8554)]  # B waits for its next record


def test_an_announce_flood_changed_the_directory_without_any_rate_limit() -> None:
    """One RTSP server pushed 15,806 changed SDPs in 3 s (every one a store write and an
    event) where SAP takes 100 a second from one source: now the same bucket."""
    e = Engine()
    outcomes = [e.put_ravenna(sdp_text(version=v, name=f"v{v}"), HOST, URL, "A", 0.0)[0]
                for v in range(1, 1001)]
    burst = int(e.limits.source_burst)
    assert outcomes[:burst] == ["new"] + ["changed"] * (burst - 1)
    assert set(outcomes[burst:]) == {"rate_limited"}
    assert [r.name for r in e.records()] == [f"v{burst}"]  # the row stays as it was


def test_a_rate_limited_answer_keeps_the_row_and_describes_again_soon() -> None:
    c = RavennaCore(Bounds(period=30.0, retry_floor=1.0))
    c.added("A", 0.0)
    c.resolved("A", HOST, 8554, 0.0)
    c.described("A", "sid-a", 0.5)
    assert c.deferred("A", "rate_limited", 2.0) == []  # an ANNOUNCE put off
    assert c.session_of("A") == "sid-a" and c.next_timer() == 3.0
    assert c.due(3.0) == [Describe("A", HOST, 8554)]
    assert c.deferred("A", "rate_limited", 3.5) == []  # a DESCRIBE's answer put off
    assert c.next_timer() == 4.5 and c.refusals["rate_limited"] == 2


def test_a_server_closing_after_each_answer_was_described_again_in_a_busy_loop() -> None:
    """A server that closes the connection after each DESCRIBE (as an HTTP/1.0 server
    would) was asked again at once, every time: 1,500 connections a second."""
    c = RavennaCore(Bounds(period=30.0, retry_floor=1.0))
    c.added("A", 0.0)
    c.resolved("A", HOST, 8554, 0.0)
    now, asked = 0.0, 1
    for _ in range(1000):
        if now >= 300.0:
            break
        c.described("A", "sid-a", now)
        if not c.closed("A", now):  # closed right after the answer; asked again at once?
            due = c.next_timer()
            assert due is not None and c.due(due)
            now = due
        asked += 1
    assert asked <= 300.0 / 30.0 + 8  # a few quick retries, then once a period
    assert c.session_of("A") == "sid-a"


def test_a_long_held_connection_closed_is_still_described_again_at_once() -> None:
    c = RavennaCore(Bounds(period=30.0, retry_floor=1.0))
    c.added("A", 0.0)
    c.resolved("A", HOST, 8554, 0.0)
    c.described("A", "sid-a", 0.0)
    assert c.closed("A", 3.0) == [Describe("A", HOST, 8554)]
    c.described("A", "sid-a", 3.0)
    assert c.closed("A", 3.1) == []  # quick again: paused
    c.due(c.next_timer() or 0.0)
    c.described("A", "sid-a", 5.0)
    assert c.closed("A", 100.0) == [Describe("A", HOST, 8554)]  # held long: at once


def test_a_sap_deletion_removed_a_row_its_ravenna_service_still_serves() -> None:
    """The device stops announcing on SAP (its deletion) but still advertises and
    serves the session over RAVENNA: the whole row went, and came back as new at the
    next DESCRIBE. A silent SAP path only ends that path; a deletion is the same."""
    from sapd.records import RAVENNA, SAP  # noqa: PLC0415
    from tests.packets import announce, delete  # noqa: PLC0415

    e = Engine()
    e.arrival_reader = lambda arrival: ("239.255.255.255", "eth0")
    sap_host = "10.0.0.1"
    url = "rtsp://10.0.0.1:8554/by-name/A"
    assert e.receive_datagram(announce(sdp_text(), source=sap_host), 0.0, sap_host,
                              arrival=object()) == "new"
    e.put_ravenna(sdp_text(), sap_host, url, "A", 1.0)
    assert sorted(v[0] for r in e.records() for v in r.heard_via) == [RAVENNA, SAP]
    assert e.receive_datagram(delete(source=sap_host), 2.0, sap_host) == "deleted"
    assert [[v[0] for v in r.heard_via] for r in e.records()] == [[RAVENNA]]
    (record,) = e.records()
    assert record.expires is None


def test_a_service_refused_for_the_service_cap_was_never_followed_when_room_freed() -> None:
    """"Retried when room frees", said the core, but a refused name was forgotten:
    mDNS says Added once, so it stayed unlisted while it was advertised."""
    c = RavennaCore(Bounds(max_services=2))
    for name in ("A", "B", "C"):
        c.added(name, 0.0)
    assert c.removed("A", 1.0) == [core.Resolve("C")]
    assert c.follows("C")
    c.added("D", 2.0)  # refused in turn; withdrawn while waiting: forgotten
    assert c.removed("D", 3.0) == []
    assert c.removed("B", 4.0) == []


def test_a_service_refused_for_the_host_cap_was_never_tried_again() -> None:
    c = RavennaCore(Bounds(max_per_host=1))
    for name in ("A", "B"):
        c.added(name, 0.0)
        c.resolved(name, HOST, 8554, 0.0)
    assert c.refusals[core.HOST_CAP] == 1
    assert core.Resolve("B") in c.removed("A", 1.0)
    assert c.resolved("B", HOST, 8554, 1.5) == [Describe("B", HOST, 8554)]


def test_a_rate_limited_new_ravenna_sdp_left_its_id_held_by_ravenna() -> None:
    """A put-off RAVENNA SDP of a session not listed yet must hold nothing: its id held
    as RAVENNA's made SAP's later changes of that session count as mere refreshes."""
    from tests.packets import announce  # noqa: PLC0415

    e = Engine()
    for v in range(int(e.limits.source_burst)):  # the host's bucket emptied
        e.put_ravenna(sdp_text(session=9, version=v + 1), HOST, URL, "B", 0.0)
    assert e.put_ravenna(sdp_text(session=1), HOST, URL, "A", 0.0)[0] == "rate_limited"
    assert e.receive_datagram(announce(sdp_text(session=1, name="one"), source=HOST),
                              10.0, HOST) == "new"
    assert e.receive_datagram(announce(sdp_text(session=1, name="two"), source=HOST),
                              11.0, HOST) == "changed"


def test_an_rtsp_server_serving_another_hosts_o_identity_hijacks_nothing() -> None:
    """A server at 10.0.0.66 answers DESCRIBE with the o= identity (and a higher
    version) of a session 10.0.0.1 announces on SAP: the SAP row keeps its content and
    paths; the forged one is a row of its own, listed as coming from 10.0.0.66."""
    from tests.packets import announce  # noqa: PLC0415

    e = Engine()
    victim, forger = "10.0.0.1", "10.0.0.66"
    e.receive_datagram(announce(sdp_text(name="real"), source=victim), 0.0, victim)
    forged = sdp_text(version=99, name="forged")  # o=... IN IP4 10.0.0.1
    outcome, sid = e.put_ravenna(forged, forger, f"rtsp://{forger}:554/by-name/x", "x", 1.0)
    assert outcome == "new"
    rows = {r.source: r for r in e.records()}
    assert rows[victim].name == "real" and rows[victim].version == 1
    assert rows[forger].name == "forged" and rows[forger].id == sid


def test_the_relay_re_announced_a_session_its_own_origin_host_announces_on_sap() -> None:
    """[ravenna] announce_on_sap: the RTSP server at 10.0.0.66 serves the o= identity of
    10.0.0.9, which announces it on SAP itself. The loop guard took 10.0.0.9 for another
    relaying sapd and, its address being higher than ours, re-announced the copy (with
    whatever version the RTSP server wrote) beside the original."""
    assert core.should_relay(False, ["10.0.0.9"], "10.0.0.2", origin="10.0.0.9") is False
    assert core.should_relay(False, ["10.0.0.9"], "10.0.0.2", origin="10.0.0.66") is True
    assert core.should_relay(False, [], "10.0.0.2", origin="10.0.0.66") is True


@pytest.mark.parametrize(("addresses", "port", "picked"), [
    (["0.0.0.0"], 8554, None),  # connect() takes it as this host
    (["127.0.0.1"], 8554, None),  # sapd's own loopback services, asked from the LAN
    (["224.0.0.251"], 8554, None),
    (["255.255.255.255"], 8554, None),
    (["10.0.0.5"], 0, None),  # port 0
    (["127.0.0.1", "10.0.0.5"], 8554, "10.0.0.5"),  # the first usable one
    (["10.0.0.5"], 8554, "10.0.0.5"),
])
def test_mdns_records_pointing_at_this_host_or_nowhere_were_connected_to(
        addresses: list[str], port: int, picked: str | None) -> None:
    """An A record of 127.0.0.1 or 0.0.0.0 made sapd send DESCRIBEs to its own host's
    loopback services (any port the record named), and port 0, a multicast or the
    broadcast address were tried for ever; only the first address was looked at."""
    assert core.pick_address(addresses, port) == picked
