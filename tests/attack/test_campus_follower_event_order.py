"""Another site's changes, read in one look, in the order they were committed: found by
withdrawing a session at one site and announcing it again before the other site's
follower looked (its 1 s poll, or while its database connection was away).

The follower (PostgresDirectory.changes_since) listed a site's new and changed rows
first and its removals after, whatever their change numbers. A session deleted and then
announced again came out as ``new`` then ``deleted``: the other site's /v1/events said
the session was gone, while its listing (read from the database) showed it.
"""

from __future__ import annotations

from sapd.store.postgresql import PostgresDirectory
from tests.contract.test_directory_backend import record
from tests.postgres import PostgresDatabase


def test_deleted_then_announced_again_ends_as_present(
        postgres_database: PostgresDatabase) -> None:
    writer = PostgresDirectory(postgres_database.dsn, "east")
    reader = PostgresDirectory(postgres_database.dsn, "west")
    try:
        session = record(1)
        writer.upsert([session])
        seen = reader.watermarks()
        writer.delete([session.id])
        writer.upsert([session.with_changes(version=2)])
        seen, changes = reader.changes_since(seen)
        story = [(kind, r.id) for kind, r in changes if r.id == session.id]
        assert story[-1][0] in ("new", "changed"), story
        assert reader.get(session.id) is not None  # what the listing says
        # and the other way round: announced again, then deleted for good
        writer.delete([session.id])
        _, changes = reader.changes_since(seen)
        assert [kind for kind, r in changes if r.id == session.id][-1] == "deleted"
    finally:
        writer.close()
        reader.close()


def test_changed_then_expired_ends_as_expired(postgres_database: PostgresDatabase) -> None:
    writer = PostgresDirectory(postgres_database.dsn, "east")
    reader = PostgresDirectory(postgres_database.dsn, "west")
    try:
        first, second = record(1), record(2)
        writer.upsert([first, second])
        seen = reader.watermarks()
        writer.delete([first.id])
        writer.upsert([first.with_changes(version=3)])
        writer.upsert([second.with_changes(version=3)])
        writer.delete([second.id])
        _, changes = reader.changes_since(seen)
        last = {r.id: kind for kind, r in changes}
        assert last[first.id] in ("new", "changed") and last[second.id] == "deleted", changes
    finally:
        writer.close()
        reader.close()
