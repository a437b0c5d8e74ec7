"""The engine trusts the datagram's IP source, not the SAP header's originating source
(issue 13 item 3): pure, with a fake clock. The cross-host versions of these run on real
hosts in tests/netns/test_sapd_trust_the_packet.py."""

from __future__ import annotations

from sapd.lifecycle import (
    DROP_LOCAL,
    DROP_OWN,
    DROP_RATE_LIMITED,
    Engine,
    Limits,
    record_from_session,
    session_id,
)
from sapd.sdp import parse
from tests.packets import announce, delete, sdp_text

VICTIM, ATTACKER, US = "10.0.0.1", "10.0.0.66", "10.0.0.9"


def test_deletion_from_another_sender_with_the_victims_header_source_is_ignored() -> None:
    e = Engine()
    assert e.receive_datagram(announce(sdp_text()), 0.0, VICTIM) == "new"
    assert e.receive_datagram(delete(source=VICTIM), 1.0, ATTACKER) == "unknown_deletion"
    assert len(e) == 1
    assert e.receive_datagram(delete(source=VICTIM), 2.0, VICTIM) == "deleted"


def test_higher_version_from_another_sender_is_listed_beside_not_replacing() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text(name="real")), 0.0, VICTIM)
    assert e.receive_datagram(announce(sdp_text(version=5, name="fake")), 1.0,
                              ATTACKER) == "new"
    by_source = {r.source: r for r in e.records()}
    assert by_source[VICTIM].name == "real" and by_source[ATTACKER].name == "fake"
    assert by_source[ATTACKER].to_json()["header_source"] == VICTIM  # kept as data


def test_ids_stay_stable_where_the_header_source_is_the_sender() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text()), 0.0, VICTIM)
    (record,) = e.records()
    assert record.id == session_id(VICTIM, "- 1 IN IP4 10.0.0.1", "")
    assert record.header_source == "" and record.to_json()["header_source"] == VICTIM


def _local(e: Engine) -> str:
    text = sdp_text(session=7, name="ours", origin=US)
    sid = session_id(US, parse(text).identity, "")
    record = record_from_session(parse(text), e.scopes, sid=sid, source=US, msg_hash=77,
                                 now=0.0, first_seen=0.0, local=True)
    e.put_local(record, 0.0)
    e.mark_own(US, 77)
    return sid


def test_a_deletion_or_higher_version_with_our_address_never_changes_a_local_one() -> None:
    e = Engine()
    e.set_own_addresses([US])
    sid = _local(e)
    deletion = delete(session=7, source=US, origin=US)
    hijack = announce(sdp_text(session=7, version=9, name="hijacked", origin=US), source=US)
    for sender in (ATTACKER, US):  # another host, or another process on ours
        e.receive_datagram(deletion, 1.0, sender)
        e.receive_datagram(hijack, 1.0, sender)
    assert e.counters[DROP_LOCAL] == 2  # the two from our address; the rest are theirs
    local = e.get(sid)
    assert local is not None and local.local and local.name == "ours" and local.version == 1
    assert {r.source for r in e.records() if not r.local} == {ATTACKER}


def test_own_packet_filter_needs_our_address_as_the_sender() -> None:
    e = Engine()
    e.set_own_addresses([US])
    _local(e)
    ours = announce(sdp_text(session=7, name="ours", origin=US), source=US, msg_hash=77)
    assert e.receive_datagram(ours, 1.0, US) == DROP_OWN  # our own, looped back
    assert e.receive_datagram(ours, 1.0, ATTACKER) == "new"  # a copy: the copier's


def test_rotating_the_header_source_does_not_defeat_the_rate_limit() -> None:
    e = Engine(limits=Limits(source_rate=100.0, source_burst=200.0))
    outcomes = [e.receive_datagram(announce(sdp_text(session=n), source=f"10.1.{n // 256}."
                                            f"{n % 256}"), 0.001 * n / 5, ATTACKER)
                for n in range(5000)]
    accepted = outcomes.count("new")
    assert accepted < 400 and outcomes.count(DROP_RATE_LIMITED) == 5000 - accepted


def test_refresh_fast_path_is_per_sender() -> None:
    e = Engine()
    packet = announce(sdp_text(name="A"))
    e.receive_datagram(packet, 0.0, VICTIM)
    # the same bytes from another sender are that sender's announcement, not a refresh
    assert e.receive_datagram(packet, 1.0, ATTACKER) == "new"
    assert e.receive_datagram(packet, 2.0, VICTIM) == "refresh"
