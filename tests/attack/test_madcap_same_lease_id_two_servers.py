"""One lease id asked of two madcapd before they have caught up with each other: found
by sending a client's REQUEST to one server and, within the second the other takes to
read the first's commits, a new REQUEST (new xid, same lease id) to the other.

One server answers a new transaction for a lease it holds with that lease's addresses.
Two servers did not: the second did not know the lease yet, picked other addresses, and
its commit overwrote the first server's row (same lease id, same client host), so the
database now held the lease on the new addresses and the first ones were free at once,
with no guard time, while the client had been acknowledged both. Another client could
then be acknowledged the first addresses while the first client used them. The database
now refuses to move a live lease to other addresses (``stale``): the second server
adopts the stored lease and the client's retransmission is answered with it.
"""

from __future__ import annotations

import psycopg

from madcap.store.postgresql import MIGRATIONS, SCHEMA_VERSION, PostgresLeaseStore
from tests.contract.test_lease_store import T0, lease
from tests.postgres import PostgresDatabase


def test_second_server_cannot_move_a_live_lease_to_other_addresses(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    first = lease(1, "239.255.0.1")
    assert a.commit([first]).refused == frozenset()
    # b has not caught up: the same lease id, other addresses, asked a moment later
    moved = lease(1, "239.255.0.7", start=T0 + 0.5).with_changes(xid=99)
    result = b.commit([moved])
    assert result.refused == frozenset({first.lease_id})
    assert result.taken == (first,)
    assert b.get(first.lease_id) == first
    # and the first addresses stay held: nobody else can have them
    other = lease(2, "239.255.0.1", start=T0 + 1)
    assert b.commit([other]).refused == frozenset({other.lease_id})


def test_renewal_release_and_expiry_by_another_server_still_go_through(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    first = lease(1, "239.255.0.1")
    assert a.commit([first]).refused == frozenset()
    renewed = first.with_changes(end=first.end + 300, hold_until=first.hold_until + 300)
    assert b.commit([renewed]).refused == frozenset()
    released = renewed.with_changes(state="released", end=T0 + 10, hold_until=T0 + 110)
    assert a.commit([released]).refused == frozenset()
    # an ended lease's id asked again: new addresses are right (one server does so too)
    again = lease(1, "239.255.0.9", start=T0 + 200)
    assert b.commit([again]).refused == frozenset()


def test_a_database_of_schema_1_is_migrated_to_the_refusal(
        postgres_database: PostgresDatabase) -> None:
    with psycopg.connect(postgres_database.dsn, autocommit=True) as db:
        db.execute(MIGRATIONS[0].encode(), prepare=False)
        db.execute("CREATE TABLE madcap_schema_version (version int NOT NULL)")
        db.execute("INSERT INTO madcap_schema_version VALUES (1)")
    a, b = (PostgresLeaseStore(postgres_database.dsn) for _ in range(2))
    try:
        assert a.schema_version == b.schema_version == SCHEMA_VERSION == 2
        assert a.commit([lease(1, "239.255.0.1")]).refused == frozenset()
        moved = lease(1, "239.255.0.7", start=T0 + 0.5)
        assert b.commit([moved]).refused == frozenset({moved.lease_id})
    finally:
        a.close()
        b.close()
