"""A site's lock held by the connection of a host that lost power: found by cutting a
site's host off (no FIN, no RST) and starting its sapd again after the reboot.

One sapd a site is kept by a session advisory lock on the daemon's reader connection.
A host that crashes leaves that connection open on the server, idle, until the server's
TCP keepalive gives up on it (Linux's default: 2 h 11 min); until then the rebooted
host's sapd was refused ("site ... is in use by another sapd") and exited 1, again and
again under systemd. A live sapd beats its site's heartbeat every second, so a holder
whose site has been silent for longer than silent_after is no sapd any more: its backend
is ended and the lock taken. A live holder still refuses a second sapd.

Here the dead host's connection is a real one that holds the lock and never speaks.
"""

from __future__ import annotations

import psycopg
import pytest

from sapd.store.postgresql import SITE_LOCK, PostgresDirectory, SiteInUse
from tests.postgres import PostgresDatabase


def dead_hosts_connection(dsn: str, site: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection as a crashed sapd leaves it: the lock held, the heartbeat old."""
    zombie = psycopg.connect(dsn, autocommit=True, application_name=f"sapd {site}")
    zombie.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (SITE_LOCK, site))
    zombie.execute("UPDATE sapd_sites SET heartbeat = now() - interval '10 minutes' "
                   "WHERE site = %s", (site,))
    return zombie


def test_site_held_by_a_silent_connection_is_taken_over(
        postgres_database: PostgresDatabase) -> None:
    PostgresDirectory(postgres_database.dsn, "east", silent_after=3.0).close()  # the row
    zombie = dead_hosts_connection(postgres_database.dsn, "east")
    try:
        rebooted = PostgresDirectory(postgres_database.dsn, "east", silent_after=3.0,
                                     exclusive=True)
        try:
            assert rebooted.sites()[0]["silent"] is False
        finally:
            rebooted.close()
    finally:
        zombie.close()


def test_site_held_by_a_live_sapd_is_still_refused(
        postgres_database: PostgresDatabase) -> None:
    live = PostgresDirectory(postgres_database.dsn, "east", silent_after=3.0,
                             exclusive=True)
    try:
        with pytest.raises(SiteInUse, match="in use by another sapd"):
            PostgresDirectory(postgres_database.dsn, "east", silent_after=3.0,
                              exclusive=True)
        live.heartbeat()  # the live one is untouched
    finally:
        live.close()


@pytest.mark.parametrize("site", ["east", "Geb\u00e4ude " * 20])  # over 63 bytes
def test_own_lock_left_on_a_connection_lost_in_a_partition_is_taken_back(
        postgres_database: PostgresDatabase, site: str) -> None:
    """The same, while the site is alive: sapd's reader lost its connection (a network
    partition; the server never heard it close) while its writer kept the heartbeat
    fresh. The reconnect found the site's lock held by its own old backend, and every
    read failed as unavailable until the server's keepalive ended it."""
    reader = PostgresDirectory(postgres_database.dsn, site, silent_after=3.0,
                               exclusive=True)
    writer = PostgresDirectory(postgres_database.dsn, site, silent_after=3.0)
    lost = reader._db
    try:
        reader._db = None  # what the client saw; the server still holds the session
        writer.heartbeat()
        assert reader.sites()[0]["silent"] is False
    finally:
        if lost is not None:
            lost.close()
        reader.close()
        writer.close()
