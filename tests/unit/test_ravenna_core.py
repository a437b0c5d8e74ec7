"""RAVENNA ingest's lifecycle core with a fake clock: when a session is described, again,
dropped, and what each bound refuses."""

from __future__ import annotations

from sapd.bridges import ravenna_core as core
from sapd.bridges.ravenna_core import Bounds, Close, Describe, Drop, RavennaCore


def resolved(c: RavennaCore, name: str, host: str = "10.0.0.5", now: float = 0.0
             ) -> list[core.Action]:
    c.added(name, now)
    return c.resolved(name, host, 8554, now)


def test_a_resolved_service_is_described_then_again_every_period() -> None:
    c = RavennaCore(Bounds(period=30.0))
    assert resolved(c, "A") == [Describe("A", "10.0.0.5", 8554)]
    assert c.described("A", "sid-a", 1.0) == []
    assert c.next_timer() == 31.0
    assert c.due(30.0) == []
    assert c.due(31.0) == [Describe("A", "10.0.0.5", 8554)]
    assert c.next_timer() is None  # in flight: nothing until it is answered


def test_an_mdns_record_change_describes_at_once() -> None:
    c = RavennaCore(Bounds(period=30.0))
    resolved(c, "A")
    c.described("A", "sid-a", 1.0)
    assert c.updated("A", 5.0) == [Describe("A", "10.0.0.5", 8554)]


def test_an_announce_is_taken_and_moves_the_next_describe() -> None:
    c = RavennaCore(Bounds(period=30.0))
    resolved(c, "A")
    c.described("A", "sid-a", 1.0)
    assert c.announced("A", "sid-a", 20.0) == []
    assert c.next_timer() == 50.0


def test_withdrawal_closes_the_connection_and_drops_the_row() -> None:
    c = RavennaCore()
    resolved(c, "A")
    c.described("A", "sid-a", 1.0)
    assert c.removed("A", 2.0) == [Close("A"), Drop("A", "sid-a")]
    assert len(c) == 0 and c.connections == 0


def test_a_new_o_identity_from_the_same_service_replaces_its_row() -> None:
    c = RavennaCore()
    resolved(c, "A")
    c.described("A", "sid-1", 1.0)
    c.due(100.0)
    assert c.described("A", "sid-2", 100.0) == [Drop("A", "sid-1")]
    assert c.session_of("A") == "sid-2"


def test_a_failed_describe_drops_the_row_and_retries_after_a_growing_pause() -> None:
    c = RavennaCore(Bounds(period=30.0, retry_floor=1.0))
    resolved(c, "A")
    c.described("A", "sid-a", 0.0)
    c.due(30.0)
    assert c.failed("A", core.CONNECT_FAILED, 30.0) == [Close("A"), Drop("A", "sid-a")]
    pauses = []
    now = 30.0
    for _ in range(7):
        due = c.next_timer()
        assert due is not None
        pauses.append(due - now)
        now = due
        assert c.due(now) == [Describe("A", "10.0.0.5", 8554)]
        c.failed("A", core.TIMEOUT, now)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # doubling, capped at period
    assert c.refusals == {core.CONNECT_FAILED: 1, core.TIMEOUT: 7}
    assert c.session_of("A") is None and c.follows("A")


def test_a_closed_connection_describes_again_at_once() -> None:
    c = RavennaCore()
    resolved(c, "A")
    c.described("A", "sid-a", 0.0)
    assert c.closed("A", 3.0) == [Describe("A", "10.0.0.5", 8554)]


def test_sessions_per_host_are_capped_and_counted() -> None:
    c = RavennaCore(Bounds(max_per_host=2))
    for name in ("A", "B"):
        resolved(c, name)
        c.described(name, f"sid-{name}", 0.0)
    assert resolved(c, "C") == []
    assert c.refusals[core.HOST_CAP] == 1
    assert resolved(c, "D", host="10.0.0.6") == [Describe("D", "10.0.0.6", 8554)]


def test_connections_are_capped_and_the_waiting_one_goes_when_one_frees() -> None:
    c = RavennaCore(Bounds(max_connections=1, retry_floor=1.0))
    resolved(c, "A")
    c.described("A", "sid-a", 0.0)
    assert resolved(c, "B") == []
    assert c.refusals[core.CONNECTION_CAP] == 1
    c.removed("A", 0.5)
    assert c.due(1.0) == [Describe("B", "10.0.0.5", 8554)]


def test_services_followed_are_capped_and_counted() -> None:
    c = RavennaCore(Bounds(max_services=2))
    for name in ("A", "B", "C"):
        c.added(name, 0.0)
    assert len(c) == 2 and not c.follows("C")
    assert c.refusals[core.SERVICE_CAP] == 1


def test_a_service_withdrawn_while_described_drops_what_the_answer_made() -> None:
    c = RavennaCore()
    resolved(c, "A")
    c.removed("A", 0.5)
    assert c.described("A", "sid-a", 1.0) == [Drop("A", "sid-a")]
