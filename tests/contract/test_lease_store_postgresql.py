"""What the PostgreSQL lease store adds to the contract: several servers on one
database (the invariants S1-S6 of shared/notes/many-hosts.md 5.3), its schema versions,
its password and its outages. Against a real PostgreSQL 15 (tests/postgres.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from madcap.leases import ACTIVE, EXPIRED, LeaseStoreError
from madcap.store import open_lease_store
from madcap.store.postgresql import SCHEMA_VERSION, PostgresLeaseStore, spans
from tests.contract.test_lease_store import GUARD, T0, lease
from tests.postgres import PASSWORD, PostgresDatabase
from tests.support import script


def test_spans_are_runs_of_consecutive_addresses() -> None:
    assert spans(["239.255.0.3", "239.255.0.1", "239.255.0.2", "239.255.0.9"]) == \
        "239.255.0.1-239.255.0.3 239.255.0.9-239.255.0.9"
    assert spans(["ff15::1:ffff", "ff15::2:0"]) == "ff15::1:ffff-ff15::2:0"


def test_two_servers_racing_for_one_address_one_commits(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    mine, theirs = lease(1, "239.255.0.1"), lease(2, "239.255.0.1", start=T0 + 10)
    assert a.commit([mine]).refused == frozenset()
    result = b.commit([theirs, lease(3, "239.255.0.3")])
    assert result.refused == frozenset({theirs.lease_id}) and result.taken == (mine,)
    assert b.get(theirs.lease_id) is None and b.get(lease(3).lease_id) is not None


def test_ipv6_ranges_overlap_in_the_constraint(two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    wide = lease(1, "ff15::1", "ff15::2", "ff15::3")
    assert a.commit([wide]).refused == frozenset()
    inside = lease(2, "ff15::3", "ff15::4")
    assert b.commit([inside]).refused == frozenset({inside.lease_id})
    assert b.commit([lease(3, "ff15::4")]).refused == frozenset()


def test_the_database_itself_refuses_an_overlap(postgres_database: PostgresDatabase,
                                                two_lease_stores: list[PostgresLeaseStore]) -> None:
    # whatever a server's code does: a hold written by hand is refused as well
    two_lease_stores[0].commit([lease(1, "239.255.0.1")])
    two_lease_stores[0].commit([lease(2, "239.255.0.2")])
    with pytest.raises(psycopg.errors.ExclusionViolation):
        postgres_database.sql(
            "INSERT INTO madcap_holds SELECT lease_id, scope, "
            "madcap_inetrange('239.255.0.0', '239.255.0.1', '[]'), "
            f"madcap_timerange({T0 + 5}, {T0 + 9}, '[)') FROM madcap_leases LIMIT 1")
    overlaps = postgres_database.sql(
        "SELECT count(*) FROM madcap_holds x JOIN madcap_holds y ON x.scope = y.scope "
        "AND x.span && y.span AND x.held && y.held AND x.ctid <> y.ctid")
    assert overlaps == [(0,)]


def test_a_reply_one_server_stored_is_the_answer_of_another(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    key = (7, 3, lease(1).lease_id, "10.0.0.9:40000")
    a.reply_cache().put(key, b"ACK from a", T0)
    a.commit([lease(1)])
    cached = b.reply_cache().get(key)
    assert cached is not None and cached.reply == b"ACK from a" and cached.stamp == T0
    # b answered the same request meanwhile (it had not seen a's reply): its lease and
    # reply lose, a's reply is what b answers from now on
    b.reply_cache().put(key, b"ACK from b", T0 + 0.5)
    result = b.commit([lease(1, "239.255.0.9")])
    assert result.refused == frozenset({lease(1).lease_id})
    again = b.reply_cache().get(key)
    assert again is not None and again.reply == b"ACK from a"
    assert b.get(lease(1).lease_id) == lease(1)


def test_a_refused_leases_reply_is_not_stored(two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    a.commit([lease(1, "239.255.0.1")])
    key = (8, 3, lease(2).lease_id, "10.0.0.9:40000")
    b.reply_cache().put(key, b"never sent", T0)
    assert b.commit([lease(2, "239.255.0.1")]).refused == frozenset({lease(2).lease_id})
    assert a.reply_cache().get(key) is None


def test_each_server_catches_up_with_the_others_commits(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    b.load(T0)
    a.commit([lease(1), lease(2)])
    b.commit([lease(3)])
    assert sorted(le.xid for le in b.changes()) == [1, 2]  # not its own
    assert b.changes() == []
    a.commit([lease(1, end=T0 + 900)])
    assert b.changes() == [lease(1, end=T0 + 900)]


def test_an_expiry_of_a_lease_renewed_elsewhere_is_refused(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    a.commit([lease(1)])
    renewed = lease(1, end=T0 + 3600)
    a.commit([renewed])
    late = b.commit([lease(1, state=EXPIRED)])  # b still had the first version
    assert late.refused == frozenset({renewed.lease_id}) and late.taken == (renewed,)
    assert a.get(renewed.lease_id) == renewed
    # the same expiry from two servers is no conflict
    a.commit([lease(1, end=T0 + 3600, state=EXPIRED)])
    assert b.commit([lease(1, end=T0 + 3600, state=EXPIRED)]).refused == frozenset()


def test_one_reclaimer_at_a_time(postgres_database: PostgresDatabase,
                                 two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    a.commit([lease(1, end=T0 + 10), lease(2)])
    with psycopg.connect(postgres_database.dsn) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (0x6D61_6463_0002,))
        assert a.purge(T0 + 10 + GUARD) == 0  # another is reclaiming: skipped
        other.execute("SELECT pg_advisory_unlock(%s)", (0x6D61_6463_0002,))
    assert b.purge(T0 + 10 + GUARD) == 1


def test_times_come_from_the_database_clock(two_lease_stores: list[PostgresLeaseStore]) -> None:
    a, b = two_lease_stores
    assert abs(a.now() - b.now()) < 0.5


def test_a_newer_schema_is_refused(postgres_database: PostgresDatabase) -> None:
    PostgresLeaseStore(postgres_database.dsn).close()
    postgres_database.sql(f"INSERT INTO madcap_schema_version VALUES ({SCHEMA_VERSION + 1})")
    with pytest.raises(LeaseStoreError, match="newer than this madcapd"):
        PostgresLeaseStore(postgres_database.dsn)


def test_migrate_check_then_apply(postgres_database: PostgresDatabase, tmp_path: Path) -> None:
    config = tmp_path / "madcapd.toml"
    config.write_text(f'[store]\nbackend = "postgresql"\ndsn = "{postgres_database.dsn}"\n')

    def migrate(*mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script("madcapd"), "--config", str(config), "--migrate",
                               *mode], capture_output=True, text=True, timeout=60,
                              check=False)
    checked = migrate("check")
    assert checked.returncode == 3 and "version 0" in checked.stdout
    assert postgres_database.sql("SELECT to_regclass('madcap_leases')") == [(None,)]
    applied = migrate()
    assert applied.returncode == 0 and "migrated" in applied.stdout, applied.stderr
    current = migrate()
    assert current.returncode == 0 and f"current (version {SCHEMA_VERSION})" in current.stdout
    assert migrate("check").returncode == 0
    config.write_text('[store]\nbackend = "postgresql"\ndsn = "host=/nonexistent"\n')
    failed = migrate()
    assert failed.returncode == 1 and "unavailable" in failed.stderr


def test_password_from_the_password_file_over_tcp(postgres_database: PostgresDatabase,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(LeaseStoreError, match=r"unavailable: .*password"):
        open_lease_store("postgresql", tmp_path, dsn=postgres_database.tcp_dsn())
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    store = open_lease_store("postgresql", tmp_path, dsn=postgres_database.tcp_dsn(),
                             password_file=str(secret))
    assert store.commit([lease(1)]).refused == frozenset()
    store.close()
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # or libpq's own ways
    open_lease_store("postgresql", tmp_path, dsn=postgres_database.tcp_dsn()).close()


def test_database_down_then_back_without_a_new_store(postgres_database: PostgresDatabase,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("madcap.store.postgresql.RECONNECT_EVERY", 0.0)
    store = PostgresLeaseStore(postgres_database.dsn)
    store.commit([lease(1)])
    postgres_database.server.stop()
    try:
        with pytest.raises(LeaseStoreError) as failed:
            store.commit([lease(2)])
        assert failed.value.reason == "unavailable" and store.problem is not None
        assert store.reply_cache().get((1, 3, b"x", "h:1")) is None  # no hang, no raise
    finally:
        postgres_database.server.start()
    assert store.commit([lease(2)]).refused == frozenset()
    assert store.problem is None and store.reconnects == 1
    assert [le.xid for le in sorted(store.load(T0), key=lambda le: le.xid)] == [1, 2]
    assert store.get(lease(1).lease_id) is not None and lease(1).state == ACTIVE
    store.close()


def test_a_lease_id_another_host_holds_is_not_taken_over_through_another_server(
        two_lease_stores: list[PostgresLeaseStore]) -> None:
    # lease ids are no secret (RFC 2730 s. 4): a second host naming one at a server that
    # has not seen the lease yet must not overwrite the first host's lease
    a, b = two_lease_stores
    mine = lease(1, "239.255.0.1", client="10.0.0.9:40000")
    a.commit([mine])
    theirs = lease(1, "239.255.0.7", client="10.0.0.66:40000")
    result = b.commit([theirs])
    assert result.refused == frozenset({mine.lease_id}) and result.taken == (mine,)
    assert a.get(mine.lease_id) == mine
    renewed = lease(1, "239.255.0.1", end=T0 + 900, client="10.0.0.9:40001")  # same host
    assert b.commit([renewed]).refused == frozenset()
