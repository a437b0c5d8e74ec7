"""The engine's RAVENNA side, with a fake clock: one row per o= identity and host however
it is heard, which content wins, and how a RAVENNA row ends (its service, not SAP's
timers)."""

from __future__ import annotations

from sapd.lifecycle import Engine
from sapd.records import RAVENNA, SAP
from tests.packets import announce, sdp_text

HOST = "10.0.0.1"
URL = "rtsp://10.0.0.1:8554/by-name/A"


def engine() -> Engine:
    e = Engine()
    e.arrival_reader = lambda arrival: ("239.255.255.255", "eth0")
    return e


def heard(e: Engine) -> list[list[str]]:
    return [sorted(v[0] for v in r.heard_via) for r in e.records()]


def kinds(e: Engine) -> list[str]:
    out = []
    while (event := e.next_event()) is not None:
        out.append(event.kind)
    return out


def sap(e: Engine, now: float, version: int = 1, name: str = "A") -> str:
    return e.receive_datagram(announce(sdp_text(version=version, name=name), source=HOST),
                              now, HOST, arrival=object())


def test_a_ravenna_session_is_listed_and_never_expires_by_sap_timers() -> None:
    e = engine()
    assert e.put_ravenna(sdp_text(name="A"), HOST, URL, "A", 0.0)[0] == "new"
    (record,) = e.records()
    assert record.heard_via == ((RAVENNA, "", "", HOST),) and record.expires is None
    assert record.to_json()["heard_via"] == [{"via": "ravenna", "group": None,
                                             "interface": None, "source": HOST,
                                             "url": URL, "service": "A"}]
    e.handle_timer(10 ** 9)
    assert len(e) == 1
    assert e.put_ravenna(sdp_text(name="A"), HOST, URL, "A", 30.0)[0] == "refresh"


def test_a_stream_heard_on_sap_and_ravenna_from_one_host_is_one_row() -> None:
    e = engine()
    assert sap(e, 0.0) == "new"
    outcome, sid = e.put_ravenna(sdp_text(name="A"), HOST, URL, "A", 1.0)
    assert outcome == "changed" and len(e) == 1
    assert heard(e) == [[RAVENNA, SAP]]
    assert sap(e, 30.0) == "refresh"  # the SAP path only lives on
    assert heard(e) == [[RAVENNA, SAP]]
    stored = e.take_writes().upserts[sid]
    assert stored.sdp and sorted(v[0] for v in stored.heard_via) == [RAVENNA, SAP]


def test_another_host_with_the_same_o_identity_is_another_row() -> None:
    e = engine()
    sap(e, 0.0)
    e.put_ravenna(sdp_text(name="A"), "10.0.0.2", URL, "A", 1.0)
    assert len(e) == 2


def test_the_higher_version_wins_and_ravenna_wins_a_tie() -> None:
    e = engine()
    sap(e, 0.0, version=1, name="sap v1")
    e.put_ravenna(sdp_text(version=1, name="ravenna v1"), HOST, URL, "A", 1.0)
    assert [r.name for r in e.records()] == ["ravenna v1"]  # a tie: RAVENNA's
    assert sap(e, 30.0, version=1, name="sap v1") == "refresh"
    assert [r.name for r in e.records()] == ["ravenna v1"]
    assert sap(e, 60.0, version=2, name="sap v2") == "changed"  # newer: SAP's
    assert [r.name for r in e.records()] == ["sap v2"] and heard(e) == [[RAVENNA, SAP]]
    assert e.put_ravenna(sdp_text(version=1, name="ravenna v1"), HOST, URL, "A",
                         61.0)[0] == "refresh"
    assert [r.name for r in e.records()] == ["sap v2"]


def test_a_silent_sap_path_leaves_the_row_heard_over_ravenna() -> None:
    e = engine()
    sap(e, 0.0)
    e.put_ravenna(sdp_text(), HOST, URL, "A", 1.0)
    kinds(e)
    e.handle_timer(10_000.0)
    assert heard(e) == [[RAVENNA]] and kinds(e) == ["changed"]
    assert next(iter(e.records())).expires is None
    assert sap(e, 10_001.0) == "refresh"  # SAP heard again: listed again
    assert heard(e) == [[RAVENNA, SAP]]


def test_withdrawal_removes_a_ravenna_only_row_and_keeps_one_also_on_sap() -> None:
    e = engine()
    _, only = e.put_ravenna(sdp_text(session=9), HOST, URL, "B", 0.0)
    sap(e, 0.0)
    _, both = e.put_ravenna(sdp_text(), HOST, URL, "A", 1.0)
    assert only is not None and both is not None
    kinds(e)
    assert e.remove_ravenna(only, 2.0) == "deleted"
    assert e.remove_ravenna(both, 2.0) == "changed"
    assert heard(e) == [[SAP]] and kinds(e) == ["deleted", "changed"]
    (record,) = e.records()
    assert record.expires is not None and "rtsp_url" not in record.options
    e.handle_timer(record.expires)  # now on SAP's timers alone
    assert len(e) == 0


def test_rows_a_previous_run_heard_over_ravenna_expire_after_the_grace_unless_found() -> None:
    first = engine()
    first.put_ravenna(sdp_text(session=1), HOST, URL, "A", 0.0)
    first.put_ravenna(sdp_text(session=2), HOST, URL, "B", 0.0)
    restarted = engine()
    restarted.load(first.take_writes().upserts.values())
    assert restarted.ravenna_grace(100.0, 60.0) == 2
    restarted.put_ravenna(sdp_text(session=1), HOST, URL, "A", 120.0)  # found again
    restarted.handle_timer(160.0)
    assert [r.identity for r in restarted.records()] == [f"- 1 IN IP4 {HOST}"]


def test_an_sdp_the_directory_cannot_take_is_refused_and_stores_nothing() -> None:
    e = Engine()
    assert e.put_ravenna("this is not SDP", HOST, URL, "A", 0.0) == ("invalid_sdp", None)
    big = sdp_text(extra="a=x:" + "y" * 20_000 + "\r\n")
    assert e.put_ravenna(big, HOST, URL, "A", 0.0) == ("too_large", None)
    assert len(e) == 0 and not e.take_writes()


def test_a_ravenna_row_the_store_refused_is_not_kept_alive_by_sap_timers() -> None:
    """revert() forgets the RAVENNA hold with the row: a SAP row of that id later must
    expire on SAP's timers, not linger with no path at all."""
    e = engine()
    _, sid = e.put_ravenna(sdp_text(), HOST, URL, "A", 0.0)
    assert sid is not None
    e.revert(sid, None)
    sap(e, 1.0)
    (record,) = e.records()
    assert record.expires is not None
    e.handle_timer(record.expires)
    assert len(e) == 0
