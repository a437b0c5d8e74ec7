"""madcapd under a role that may read and write the lease tables but not create any:
found by running both daemons as a least-privilege role on a database an operator had
migrated (``madcapd --migrate``) as its owner.

sapd started; madcapd exited 1 with "permission denied for schema public": its schema
check ran ``CREATE TABLE IF NOT EXISTS madcap_schema_version`` at every start (and in
``--migrate check``), and PostgreSQL checks the right to create before it sees that
the table is there. A migrated schema now needs no DDL: the version is looked up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from madcap.store.postgresql import SCHEMA_VERSION, PostgresLeaseStore
from tests.contract.test_lease_store import lease
from tests.postgres import PostgresDatabase


@pytest.fixture
def dml_only(postgres_database: PostgresDatabase) -> Iterator[str]:
    """A DSN for a role with SELECT/INSERT/UPDATE/DELETE on the migrated tables only."""
    PostgresLeaseStore(postgres_database.dsn).close()  # migrated by the owner
    role = f"madcap_dml_{os.getpid()}_{postgres_database.name}"
    postgres_database.sql(f'CREATE ROLE "{role}" LOGIN')
    postgres_database.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    postgres_database.sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA '
                          f'public TO "{role}"')
    yield postgres_database.dsn.replace("user=postgres", f"user={role}")
    postgres_database.sql(f'DROP OWNED BY "{role}"')
    postgres_database.sql(f'DROP ROLE "{role}"')


def test_migrated_schema_needs_no_create_right(dml_only: str) -> None:
    store = PostgresLeaseStore(dml_only)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.migrate(check_only=True).before == SCHEMA_VERSION
        assert store.commit([lease(1)]).refused == frozenset()
        assert store.get(lease(1).lease_id) == lease(1)
    finally:
        store.close()
