"""What the pages and the API read from an SDP: codecs, PTP clock, ST 2022-7 legs,
conflicts on a group and port, each session's history."""

from __future__ import annotations

from sapd import conflicts, sdp, streaminfo
from sapd.history import SessionHistory
from sapd.lifecycle import Event, record_from_session
from sapd.scopes import ScopeTable

AES67 = ("v=0\r\no=- 7 3 IN IP4 10.0.0.9\r\ns=Stage box\r\nt=0 0\r\n"
         "a=group:DUP primary secondary\r\n"
         "a=ts-refclk:ptp=IEEE1588-2008:39-a7-94-ff-fe-07-cb-d0:0\r\n"
         "a=mediaclk:direct=0\r\n"
         "m=audio 5004 RTP/AVP 98\r\nc=IN IP4 239.69.1.1/32\r\na=rtpmap:98 L24/48000/8\r\n"
         "a=ptime:1\r\na=mid:primary\r\n"
         "m=audio 5004 RTP/AVP 98\r\nc=IN IP4 239.70.1.1/32\r\na=rtpmap:98 L24/48000/8\r\n"
         "a=mid:secondary\r\n")


def record(text: str, source: str, sid: str, stale: bool = False) -> object:
    description = sdp.parse(text)
    made = record_from_session(description, ScopeTable(), sid=sid, source=source, msg_hash=1,
                               now=100.0, first_seen=100.0)
    return made.with_changes(stale=stale)


def test_summary_reads_codecs_clock_and_redundancy() -> None:
    description = sdp.parse(AES67)
    pairs = [(a.name, a.value) for a in description.attributes] + [
        (a.name, a.value) for m in description.media for a in m.attributes]
    found = streaminfo.summary(pairs)
    assert found["codecs"] == ["L24/48000/8"]
    assert found["clock"]["grandmaster"] == "39-A7-94-FF-FE-07-CB-D0"
    assert found["clock"]["domain"] == 0
    assert found["redundant"] and found["redundancy"]["mids"] == ["primary", "secondary"]


def test_traceable_and_other_clock_sources() -> None:
    assert streaminfo.parse_refclk("ptp=IEEE1588-2008:traceable")["traceable"] is True
    assert streaminfo.parse_refclk("localmac=00-11-22-33-44-55")["source"] == "localmac"


def test_conflict_needs_two_senders_on_one_group_and_port() -> None:
    same = AES67.replace("Stage box", "Other box").replace("o=- 7", "o=- 8")
    other_port = AES67.replace("m=audio 5004", "m=audio 5006")
    a = record(AES67, "10.0.0.9", "a")
    b = record(same, "10.0.0.10", "b")
    c = record(AES67.replace("o=- 7", "o=- 9"), "10.0.0.9", "c")  # same sender: no conflict
    d = record(other_port, "10.0.0.11", "d")
    found = conflicts.find_conflicts([a, b, c, d])  # type: ignore[list-item]
    assert [(f.group, f.port) for f in found] == [("239.69.1.1", 5004), ("239.70.1.1", 5004)]
    assert conflicts.conflicting_ids(found) == {"a", "b", "c"}


def test_stale_session_is_not_a_conflict() -> None:
    a = record(AES67, "10.0.0.9", "a")
    b = record(AES67.replace("o=- 7", "o=- 8"), "10.0.0.10", "b", stale=True)
    assert conflicts.find_conflicts([a, b]) == []  # type: ignore[list-item]


def test_history_is_bounded_per_session_and_in_sessions() -> None:
    history = SessionHistory(per_session=3, sessions=2)
    rec = record(AES67, "10.0.0.9", "a")
    for n, kind in enumerate(["new", "changed", "changed", "changed", "deleted"]):
        history(Event(kind, "a", float(n), rec))  # type: ignore[arg-type]
    assert [s.event for s in history.of("a")] == ["changed", "changed", "deleted"]
    assert history.of("a")[-1].to_json()["reason"] == "deletion"
    history(Event("new", "b", 9.0, rec))  # type: ignore[arg-type]
    history(Event("new", "c", 9.0, rec))  # type: ignore[arg-type]
    assert history.of("a") == [] and len(history) == 2
