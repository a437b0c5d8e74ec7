"""The lifecycle engine with a fake clock: every rule, to the second, without sleeping."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from sapd import wire
from sapd.lifecycle import PROFILES, Engine, Limits
from sapd.records import SearchQuery, Writes
from sapd.store.sqlite import SqliteDirectory
from tests.packets import announce, delete, sdp_text


def events(engine: Engine) -> list[tuple[str, str]]:
    out = []
    while (e := engine.next_event()) is not None:
        out.append((e.kind, e.record.name))
    return out


def test_new_then_refresh_without_parsing() -> None:
    e = Engine()
    pkt = announce(sdp_text(name="A"))
    assert e.receive_datagram(pkt, 0.0) == "new"
    writes = e.take_writes()
    assert list(writes.upserts) and not writes.refreshes
    assert e.receive_datagram(pkt, 30.0) == "refresh"
    assert events(e) == [("new", "A")]
    writes = e.take_writes()
    assert not writes.upserts and list(writes.refreshes)


def test_higher_version_replaces_lower_is_dropped() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text(version=1, name="v1")), 0.0)
    assert e.receive_datagram(announce(sdp_text(version=2, name="v2")), 1.0) == "changed"
    assert e.receive_datagram(announce(sdp_text(version=1, name="v1")), 2.0) == "old_version"
    assert len(e) == 1 and next(iter(e.records())).name == "v2"
    assert events(e) == [("new", "v1"), ("changed", "v2")]


def test_same_identity_from_other_source_is_listed_beside() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text(), source="10.0.0.1"), 0.0)
    assert e.receive_datagram(announce(sdp_text(), source="10.0.0.2"), 0.0) == "new"
    assert len(e) == 2


def test_authenticated_and_plain_are_different_announcements() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text()), 0.0)
    signed = announce(sdp_text(), msg_hash=4242, auth=wire.AuthData(1, False, 1, b"sig"))
    assert e.receive_datagram(signed, 0.0) == "new"
    assert len(e) == 2


@pytest.mark.parametrize("full_sdp", [False, True])
def test_deletion_only_from_announcing_source(full_sdp: bool) -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text()), 0.0)
    forged = (announce(sdp_text(), source="10.0.0.66", deletion=True) if full_sdp
              else delete(source="10.0.0.66"))
    assert e.receive_datagram(forged, 1.0) == "unknown_deletion"
    assert len(e) == 1
    real = announce(sdp_text(), deletion=True) if full_sdp else delete()
    assert e.receive_datagram(real, 2.0) == "deleted"
    assert len(e) == 0
    assert [k for k, _ in events(e)] == ["new", "deleted"]


def test_drops_are_counted_by_reason() -> None:
    e = Engine()
    text = sdp_text().encode()
    assert e.receive_datagram(announce(sdp_text(), msg_hash=0), 0) == "zero_hash"
    enc = wire.encode(wire.SapPacket(5, wire.ipaddress.IPv4Address("10.0.0.1"), b"x",
                                     encrypted=True))
    assert e.receive_datagram(enc, 0) == "encrypted"
    txt = wire.encode(wire.SapPacket(5, wire.ipaddress.IPv4Address("10.0.0.1"), b"hello",
                                     payload_type="text/plain"))
    assert e.receive_datagram(txt, 0) == "not_sdp"
    assert e.receive_datagram(announce("v=0\r\ns=broken\r\n"), 0) == "invalid_sdp"
    assert e.receive_datagram(b"\x00" * 3, 0) == "truncated"
    e.mark_own("10.0.0.1", wire.content_hash(text))
    assert e.receive_datagram(announce(sdp_text()), 0) == "own_packet"
    assert e.counters["zero_hash"] == 1 and e.counters["own_packet"] == 1
    assert len(e) == 0


def test_zero_hash_accepted_when_configured() -> None:
    e = Engine(limits=Limits(accept_zero_hash=True))
    assert e.receive_datagram(announce(sdp_text(), msg_hash=0), 0) == "new"


def test_expiry_after_ten_periods_aes67() -> None:
    e = Engine(profile=PROFILES["aes67"])
    pkt = announce(sdp_text())
    for t in range(0, 300, 30):  # Dante cadence
        e.receive_datagram(pkt, float(t))
    last = 270.0
    (record,) = e.records()
    assert record.period == 30.0 and record.expires == last + 300.0
    e.handle_timer(last + 299.0)
    assert len(e) == 1
    timer = e.get_timer()
    assert timer is not None and timer <= last + 300.0
    e.handle_timer(last + 300.0)
    assert len(e) == 0 and e.counters["expired"] == 1
    assert events(e)[-1][0] == "expired"


def test_rfc_profile_has_one_hour_floor() -> None:
    e = Engine(profile=PROFILES["rfc"])
    pkt = announce(sdp_text())
    for t in (0.0, 5.0, 10.0):
        e.receive_datagram(pkt, t)
    e.handle_timer(10.0 + 3599.0)
    assert len(e) == 1
    e.handle_timer(10.0 + 3600.0)
    assert len(e) == 0


def test_repeats_under_one_second_do_not_shrink_the_period() -> None:
    e = Engine()
    pkt = announce(sdp_text())
    for t in (0.0, 0.1, 30.0, 30.1, 60.0, 60.05):
        e.receive_datagram(pkt, t)
    (record,) = e.records()
    assert record.period == 30.0


def test_t_end_time_expires_session() -> None:
    e = Engine()
    # stop at 2024-01-01 01:00 UTC
    text = sdp_text().replace("t=0 0", "t=3913056000 3913059600")
    start = 1704067200.0
    e.receive_datagram(announce(text), start)
    (record,) = e.records()
    assert record.expires == start + 300.0  # 10 x the assumed 30 s period, before t= end
    e.receive_datagram(announce(text), start + 3590.0)
    e.handle_timer(start + 3600.0)
    assert len(e) == 0
    assert e.receive_datagram(announce(text), start + 3700.0) == "ended"


def test_session_cap_keeps_existing() -> None:
    e = Engine(limits=Limits(max_sessions=2))
    for i in range(3):
        e.receive_datagram(announce(sdp_text(session=i)), 0.0)
    assert len(e) == 2 and e.counters["session_cap"] == 1
    # a change to an existing one is still accepted at the cap
    assert e.receive_datagram(announce(sdp_text(session=0, version=2)), 1.0) == "changed"


def test_per_source_rate_limit() -> None:
    e = Engine(limits=Limits(source_rate=10, source_burst=5))
    outcomes = [e.receive_datagram(announce(sdp_text(session=i)), 0.0) for i in range(8)]
    assert outcomes.count("new") == 5 and outcomes.count("rate_limited") == 3
    assert e.receive_datagram(announce(sdp_text(session=100)), 1.0) == "new"
    # another source is unaffected
    assert e.receive_datagram(announce(sdp_text(session=9), source="10.0.0.9"), 0.0) == "new"


def test_inflated_size_cap() -> None:
    e = Engine(limits=Limits(max_sdp_bytes=100))
    big = sdp_text(extra="a=x:" + "y" * 300 + "\r\n")
    packet = wire.encode(wire.SapPacket(7, wire.ipaddress.IPv4Address("10.0.0.1"),
                                        big.encode()), compress=True)
    assert e.receive_datagram(packet, 0) == "inflate_too_large"
    assert len(zlib.compress(big.encode())) < 200


def test_restart_hash_change_same_content_is_refresh() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text(), msg_hash=111), 0.0)
    assert e.receive_datagram(announce(sdp_text(), msg_hash=222), 5.0) == "refresh"
    assert e.receive_datagram(announce(sdp_text(), msg_hash=222), 10.0) == "refresh"
    assert events(e) == [("new", "Test")]


def test_load_keeps_stale_sessions_expiring() -> None:
    first = Engine()
    first.receive_datagram(announce(sdp_text()), 0.0)
    stored = [r.with_changes(stale=True) for r in first.records()]
    second = Engine()
    assert second.load(stored) == 1
    assert second.get_timer() == 300.0
    second.receive_datagram(announce(sdp_text()), 30.0)  # heard again: refresh path
    assert next(iter(second.records())).stale is False
    second.handle_timer(1000.0)
    assert len(second) == 0


def test_groups_in_use() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text(group="239.255.7.7")), 0.0)
    assert e.groups_in_use() == {"239.255.7.7"}


def test_hash_collision_between_sessions_of_one_source() -> None:
    """Two sessions from one source that share a 16-bit hash are both listed, and each
    one's re-announcements refresh itself (a stream must never go missing)."""
    e = Engine()
    one = announce(sdp_text(session=1, name="one"), msg_hash=4242)
    two = announce(sdp_text(session=2, name="two"), msg_hash=4242)
    assert e.receive_datagram(one, 0.0) == "new"
    assert e.receive_datagram(two, 0.0) == "new"
    assert e.receive_datagram(one, 30.0) == "refresh"
    assert e.receive_datagram(two, 31.0) == "refresh"
    assert sorted(r.name for r in e.records()) == ["one", "two"]
    assert {r.name: r.last_seen for r in e.records()} == {"one": 30.0, "two": 31.0}


def test_many_sessions_from_one_source_all_listed() -> None:
    e = Engine(limits=Limits(source_rate=1e9, source_burst=1e9))
    for i in range(5000):
        e.receive_datagram(announce(sdp_text(session=i, name=f"s{i}")), 0.0)
    assert len(e) == 5000


def test_deletion_of_an_older_version_keeps_the_newer() -> None:
    e = Engine()
    e.receive_datagram(announce(sdp_text(version=1, name="v1")), 0.0)
    e.receive_datagram(announce(sdp_text(version=2, name="v2")), 1.0)
    assert e.receive_datagram(delete(version=1), 1.1) == "stale_deletion"
    assert [r.name for r in e.records()] == ["v2"]
    assert e.receive_datagram(delete(version=2), 2.0) == "deleted"


def test_batches_folded_together_store_what_they_store_one_by_one(tmp_path: Path) -> None:
    """The store process folds queued batches into one; the result must not depend on it."""
    engine = Engine()
    steps = [
        [announce(sdp_text(session=s, name=f"S{s}")) for s in range(4)],
        [announce(sdp_text(session=0, name="S0")), delete(session=1)],
        [announce(sdp_text(session=1, name="S1 back")),
         announce(sdp_text(session=2, version=2, name="S2 v2"))],
        [announce(sdp_text(session=2, version=2, name="S2 v2")),
         delete(session=3)],
    ]
    batches = []
    for now, packets in enumerate(steps, start=1):
        for packet in packets:
            engine.receive_datagram(packet, now * 10.0)
        batches.append(engine.take_writes())
    one_by_one = SqliteDirectory(tmp_path / "a.sqlite3")
    folded = Writes()
    for batch in batches:
        one_by_one.apply(batch)
        folded.absorb(batch)
    together = SqliteDirectory(tmp_path / "b.sqlite3")
    together.apply(folded)

    def rows(store: SqliteDirectory) -> list[tuple[object, ...]]:
        return [(r.name, r.version, r.last_seen, r.period, r.expires)
                for r in store.search(SearchQuery())]
    assert rows(together) == rows(one_by_one)
    assert [name for name, *_ in rows(together)] == ["S0", "S1 back", "S2 v2"]


def test_memory_held_heard_via_for_every_session() -> None:
    """heard_via is stored and shown (the write and the event carry it), and memory holds
    one shared value per way of being heard, not tuples per session: ~110 bytes a
    session, 11 MB at 100,000."""
    e = Engine()
    e.arrival_reader = lambda arrival: ("239.255.255.255", "eth0")
    for n in range(2):
        assert e.receive_datagram(announce(sdp_text(session=n, name=f"S{n}")), 0.0,
                                  "10.0.0.9", object()) == "new"
    via = (("sap", "239.255.255.255", "eth0", "10.0.0.9"),)
    first, _second = e.take_writes().upserts.values()
    event = e.next_event()
    assert first.heard_via == via and event is not None
    assert event.to_json()["session"]["heard_via"] == [
        {"via": "sap", "group": "239.255.255.255", "interface": "eth0", "source": "10.0.0.9"}]
    one, two = (entry.record for entry in e._entries.values())
    assert one.heard_via == via and one.heard_via is two.heard_via  # one value, shared
    assert one.sdp == ""
