"""NMOS on a shared PostgreSQL directory registered the whole campus: found by turning
NMOS on at one of two sites.

The bridge compared the registry with ``iter_all()``, which on PostgreSQL is every
site's rows, and read each session with ``get()``, which falls back to another site's
row of that id. Other sites' changes are never events of the in-process listeners, so
their Senders were registered at start and then never changed or withdrawn: a session
another site stopped hearing stayed in the registry, active, for as long as sapd ran;
and a session this site stopped hearing stayed registered while another site heard
the same stream.
"""

from __future__ import annotations

from sapd.store.postgresql import PostgresDirectory
from tests.postgres import PostgresDatabase
from tests.unit.test_nmos_bridge import bridge, event, kinds, settle
from tests.unit.test_nmos_bridge import record as mappable


def test_only_this_sites_sessions_are_registered(
        postgres_database: PostgresDatabase) -> None:
    east = PostgresDirectory(postgres_database.dsn, "east")
    west = PostgresDirectory(postgres_database.dsn, "west")
    try:
        west.upsert([mappable(1, origin="10.0.1.1").with_changes(site="west")])
        east.upsert([mappable(2, origin="10.0.2.1").with_changes(site="east")])
        made = bridge(east)  # type: ignore[arg-type]
        made.site = "east"
        settle(made)
        sessions = {data.data["tags"]["urn:x-sapd:session"][0]
                    for (kind, _), data in made.machine.desired.items() if kind == "sender"}
        assert sessions == {"sid2"}
    finally:
        east.close()
        west.close()


def test_a_session_this_site_stops_hearing_leaves_though_another_site_hears_it(
        postgres_database: PostgresDatabase) -> None:
    east = PostgresDirectory(postgres_database.dsn, "east")
    west = PostgresDirectory(postgres_database.dsn, "west")
    try:
        same = mappable(3, origin="10.0.3.1")
        east.upsert([same.with_changes(site="east")])
        west.upsert([same.with_changes(site="west")])
        made = bridge(east)  # type: ignore[arg-type]
        made.site = "east"
        settle(made)
        assert kinds(made).get("sender") == 1
        east.delete([same.id])
        made.on_event(event("deleted", same.id))
        settle(made)
        assert kinds(made).get("sender", 0) == 0
    finally:
        east.close()
        west.close()


def test_sqlite_records_without_a_site_are_ours() -> None:
    from tests.unit.test_nmos_bridge import Directory  # noqa: PLC0415

    directory = Directory()
    directory.records["sid1"] = mappable(1)
    made = bridge(directory)
    made.site = "lab"
    settle(made)
    assert kinds(made).get("sender") == 1
