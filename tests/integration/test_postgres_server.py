"""The PostgreSQL fixture itself: both ways in, a fresh database per test, restarts."""

from __future__ import annotations

import os

import psycopg
import pytest

from tests.postgres import PASSWORD, PostgresDatabase


def test_socket_and_tcp_with_password(postgres_database: PostgresDatabase,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert postgres_database.sql("SELECT current_database()") == [(postgres_database.name,)]
    assert str(postgres_database.sql("SHOW server_version")[0][0]).startswith("15.")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(postgres_database.tcp_dsn(), connect_timeout=5).close()
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with psycopg.connect(postgres_database.tcp_dsn(), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_each_test_gets_a_fresh_database(postgres_database: PostgresDatabase) -> None:
    # runs after the one above in the same session; nothing of another test is here
    postgres_database.sql("CREATE TABLE marker (n int)")
    ours = postgres_database.sql(
        f"SELECT datname FROM pg_database WHERE datname LIKE 't{os.getpid()}\\_%'")
    assert ours == [(postgres_database.name,)]


def test_restart_keeps_committed_rows(postgres_database: PostgresDatabase) -> None:
    postgres_database.sql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    postgres_database.server.restart()
    assert postgres_database.sql("SELECT n FROM kept") == [(7,)]
    postgres_database.server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_database.dsn, connect_timeout=2).close()
    postgres_database.server.start()
    assert postgres_database.sql("SELECT n FROM kept") == [(7,)]
