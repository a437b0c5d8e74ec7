"""sapd on a PostgreSQL directory (issue 18): the password's ways in, --migrate, a value
the server cannot hold, and a server that is down at start-up. The server is the suite's
(tests/postgres.py); TCP asks for the password, the Unix socket trusts."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sapd.records import SearchQuery, Writes
from sapd.store.postgresql import PostgresDirectory
from tests.contract.test_directory_backend import record
from tests.daemons import Daemon, send_local_multicast
from tests.packets import announce, sdp_text
from tests.postgres import PASSWORD, PostgresDatabase
from tests.support import children, script, wait_for


def config(dsn: str, extra: str = "") -> str:
    return f'site = "lab"\n[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n{extra}'


def start(sapd_factory: Any, text: str, env: dict[str, str] | None = None,
          name: str = "a") -> Daemon:
    daemon: Daemon = sapd_factory(config=text, name=name)
    daemon.env = env
    return daemon.start()


def store_command_line(daemon: Daemon) -> str:
    assert daemon.proc is not None
    (store,) = children(daemon.proc.pid)
    return Path(f"/proc/{store}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_the_password_comes_from_its_file_the_environment_or_pgpass_never_argv(
        sapd_factory: Any, postgres_database: PostgresDatabase, tmp_path: Path) -> None:
    dsn = postgres_database.tcp_dsn()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password_file = secrets / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    pgpass = secrets / "pgpass"
    pgpass.write_text(f"*:*:*:*:{PASSWORD}\n")
    pgpass.chmod(0o600)
    ways = [("file", config(dsn, f'password_file = "{password_file}"\n'), None),
            ("environment", config(dsn), {"PGPASSWORD": PASSWORD}),
            ("pgpass", config(dsn), {"PGPASSFILE": str(pgpass)})]
    for way, text, env in ways:
        sapd = start(sapd_factory, text, env, name=way)
        assert sapd.get("/v1/health")["status"] == "ok", way
        line = store_command_line(sapd)
        assert "--postgresql" in line and PASSWORD not in line and "dbname" not in line, line
        sapd.stop()


def test_without_a_password_sapd_exits_naming_why(
        sapd_factory: Any, postgres_database: PostgresDatabase) -> None:
    sapd: Daemon = sapd_factory(config=config(postgres_database.tcp_dsn()), name="none")
    sapd.env = {"PGPASSFILE": "/nonexistent"}
    sapd.start(wait=False)
    assert sapd.proc is not None
    assert sapd.proc.wait(15) == 1
    assert "password" in sapd.logs()


def test_a_database_down_at_start_up_is_exit_1_naming_it(
        sapd_factory: Any, tmp_path: Path) -> None:
    sapd: Daemon = sapd_factory(
        config=config(f"host={tmp_path} port=1 dbname=none user=nobody"), name="down")
    sapd.start(wait=False)
    assert sapd.proc is not None
    assert sapd.proc.wait(15) == 1
    assert "PostgreSQL directory" in sapd.logs()


def migrate(tmp_path: Path, text: str, *mode: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "migrate.toml"
    path.write_text(text)
    return subprocess.run([script("sapd"), "--config", str(path), "--state-dir",
                           str(tmp_path / "state"), "--migrate", *mode],
                          capture_output=True, text=True, timeout=30, check=False)


def test_migrate_checks_then_brings_the_schema_up_to_date(
        postgres_database: PostgresDatabase, tmp_path: Path) -> None:
    for text in (config(postgres_database.dsn), ""):  # PostgreSQL, then SQLite
        check = migrate(tmp_path, text, "check")
        assert check.returncode == 3 and "version 0: needs migrating" in check.stdout, check
        applied = migrate(tmp_path, text)
        assert applied.returncode == 0 and "migrated from 0" in applied.stdout, applied
        again = migrate(tmp_path, text, "check")
        assert again.returncode == 0 and ": current" in again.stdout, again
    assert migrate(tmp_path, config("host=/nonexistent dbname=x"), "check").returncode == 1


def test_a_value_postgresql_cannot_hold_costs_only_its_session(
        sapd_factory: Any, postgres_database: PostgresDatabase) -> None:
    """PostgreSQL's text holds no NUL, which SDP text may carry: that one session is
    found by halving the batch, undone and counted; the others of its batch land."""
    sapd = start(sapd_factory, config(postgres_database.dsn))
    packets = [announce(sdp_text(session=n, name=f"fine {n}")) for n in range(1, 6)]
    packets.insert(2, announce(sdp_text(session=99, name="bad\0name")))
    for packet in packets:
        send_local_multicast(packet)
    wait_for(lambda: len(sapd.sessions()) == 5, 5, what="the five that fit")
    time.sleep(0.3)
    assert sorted(s["name"] for s in sapd.sessions()) == [f"fine {n}" for n in range(1, 6)]
    failures = sapd.stats()["store"]["failures"]
    assert failures.get("undone") == 1 and failures.get("unstorable_value", 0) >= 1, failures
    assert sapd.get("/v1/health")["status"] == "ok"


def test_a_quiet_sapd_is_degraded_while_its_database_is_down(
        sapd_factory: Any, postgres_database: PostgresDatabase) -> None:
    """Nothing to write, so no write is refused: health must still say the database is
    away (reads fail meanwhile), and be ok again once it is back, without a restart."""
    sapd = start(sapd_factory, config(postgres_database.dsn))
    server = postgres_database.server
    server.stop()
    try:
        wait_for(lambda: sapd.get("/v1/health")["status"] == "degraded", 5,
                 what="degraded with the database down")
        assert sapd.get("/v1/health")["store"] == "database_unreachable"
    finally:
        server.start()
    wait_for(lambda: sapd.get("/v1/health")["status"] == "ok", 10, what="ok again")
    assert sapd.stats()["campus"]["outages"] == 1


def test_a_first_batch_refused_for_a_value_leaves_the_next_batch_storable(
        postgres_database: PostgresDatabase) -> None:
    """The temporary table a batch is copied through is made in the batch's transaction:
    when that rolls back, the next batch must make it again, not retry forever."""
    store = PostgresDirectory(postgres_database.dsn, "lab")
    try:
        bad = record(1, name="bad\0name")
        with pytest.raises(psycopg.DataError):
            store.apply(Writes(upserts={bad.id: bad}))
        good = record(2)
        store.apply(Writes(upserts={good.id: good}))
        assert [r.id for r in store.iter_all()] == [good.id]
    finally:
        store.close()


def test_a_second_sapd_with_the_same_site_name_is_refused(
        sapd_factory: Any, postgres_database: PostgresDatabase) -> None:
    """Two sapd writing as one site would expire and mark stale each other's rows: the
    second is told at start, and exits 1."""
    start(sapd_factory, config(postgres_database.dsn), name="first")
    second: Daemon = sapd_factory(config=config(postgres_database.dsn), name="second")
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(15) == 1
    assert "site 'lab' is in use by another sapd" in second.logs()


def test_two_sites_write_only_their_own_rows_and_one_at_a_time_sweeps_a_silent_one(
        postgres_database: PostgresDatabase) -> None:
    """Sites on one database: a delete of one site never removes another's row of the
    same id; a silent site's rows read as stale, and once past their expiry exactly one
    of two sweepers deletes them (the other finds nothing left or the lock taken)."""
    north = PostgresDirectory(postgres_database.dsn, "north", silent_after=0.5)
    south = PostgresDirectory(postgres_database.dsn, "south", silent_after=0.5)
    east = PostgresDirectory(postgres_database.dsn, "east", silent_after=0.5)
    try:
        now = time.time()
        north.upsert([record(1, site="north", expires=now + 0.5, last_seen=now),
                      record(2, site="north", expires=None, last_seen=now)])
        south.upsert([record(1, site="south", expires=now + 60, last_seen=now)])
        assert south.delete(["s0001"]) == 1
        assert sorted((r.site, r.id) for r in east.iter_all()) == [("north", "s0001"),
                                                                  ("north", "s0002")]
        assert [r.site for r in east.search(SearchQuery(site="north"))] == ["north"] * 2
        time.sleep(1.0)  # north has gone silent: its heartbeat is older than 0.5 s
        assert all(r.stale for r in east.search(SearchQuery(site="north")))
        south.heartbeat()
        east.heartbeat()
        swept = south.sweep() + east.sweep()
        assert swept == 1  # s0001 was due; s0002 has no expiry and stays, stale
        assert [(r.id, r.stale) for r in east.iter_all()] == [("s0002", True)]
        north.heartbeat()  # back: no longer stale
        assert [r.stale for r in east.iter_all()] == [False]
    finally:
        for store in (north, south, east):
            store.close()
