"""The operator's lease listing is paged: a full pool (65,280 leases) costs one page of at
most PAGE_LIMIT, not a 15 MB answer and a ~1.3 s stall of the loop that answers MADCAP
(tests/attack/test_madcap_leases_listing_unbounded.py)."""

from __future__ import annotations

from madcap.leases import ACTIVE, PAGE_LIMIT, RELEASED, Lease, LeaseQuery
from madcap.pool import scope_from_config
from madcap.server import MadcapServer
from madcap.web import render

T0 = 1_800_000_000.0


def _lease(i: int, state: str = ACTIVE, client: str = "10.0.0.9:4000") -> Lease:
    return Lease(lease_id=b"\0" + i.to_bytes(16, "big"), scope="local",
                 addresses=(f"239.255.{i >> 8}.{i & 255}",), start=T0 - 100, end=T0 + 3000,
                 state=state, client=client, granted=T0 - 100, hold_until=T0 + 6600)


def _server(leases: list[Lease]) -> MadcapServer:
    scope = scope_from_config({"name": "local", "range": "239.255.0.0/16"}, 0)
    return MadcapServer([scope], leases, T0)


def test_listing_returned_every_lease_in_one_answer() -> None:
    server = _server([_lease(i) for i in range(1, PAGE_LIMIT + 301)])
    first = server.page(LeaseQuery())
    assert len(first.leases) == PAGE_LIMIT and first.total == PAGE_LIMIT + 300
    rest = server.page(LeaseQuery(offset=PAGE_LIMIT))
    assert len(rest.leases) == 300 and rest.total == PAGE_LIMIT + 300
    everything = server.page(LeaseQuery(limit=PAGE_LIMIT + 300)).leases
    assert first.leases + rest.leases == everything  # the pages follow one order
    assert everything == sorted(everything, key=lambda le: (le.scope, le.addresses))


def test_pages_of_a_filtered_listing_count_only_the_matches() -> None:
    leases = [_lease(i, client="10.0.0.7:1" if i % 3 else "10.0.0.8:1") for i in range(1, 31)]
    server = _server(leases)
    page = server.page(LeaseQuery(client="10.0.0.8", limit=4, offset=8))
    assert page.total == 10 and len(page.leases) == 2
    for query in (LeaseQuery(client="10.0.0.7"), LeaseQuery(address="239.255.0.5"),
                  LeaseQuery(lease_id="00" + "0" * 30 + "1"), LeaseQuery(scope="other"),
                  LeaseQuery(state="active", scope="local")):
        assert query.select(leases) == [le for le in leases if query.matches(le)], query


def test_held_leases_are_paged_with_the_active_ones() -> None:
    server = _server([_lease(1), _lease(2, state=RELEASED)])
    assert server.page(LeaseQuery()).total == 1
    assert server.page(LeaseQuery(include_held=True)).total == 2


def test_web_page_listed_every_active_lease() -> None:
    leases = [_lease(i).to_json(T0) for i in range(1, 4)]
    html = render([], leases, T0, total=70_000)
    assert "Active leases (70000)" in html and 'id="more-leases"' in html
    assert "/v1/leases?offset=3" in html
    assert 'id="more-leases"' not in render([], leases, T0)
