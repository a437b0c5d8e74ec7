"""A NUL in a search or a session id, on a PostgreSQL directory: found by sending
``%00`` in every query parameter of GET /v1/sessions and in a session id.

SQLite takes a NUL in a bound parameter and finds nothing; PostgreSQL refuses it
("text fields cannot contain NUL (0x00) bytes"), and the psycopg DataError escaped
the handler as 500 Internal Server Error with a traceback in the log. A NUL is no
site, name, address or text any session holds: it is refused with 400 naming the
parameter, on both backends alike, and an id holding one is simply not found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sapd.plumbing.client import ClientError
from tests.daemons import Daemon
from tests.postgres import PostgresDatabase
from tests.support import free_udp_port

PARAMETERS = ["text", "media", "origin", "source", "scope", "attribute", "clock", "site"]


@pytest.fixture
def campus_sapd(sapd_factory: Any, postgres_database: PostgresDatabase) -> Daemon:
    daemon: Daemon = sapd_factory(config=(
        f'site = "lab"\n[store]\nbackend = "postgresql"\n'
        f'dsn = "{postgres_database.dsn}"\n'))
    return daemon.start()


def test_nul_in_a_query_parameter_is_a_400_naming_it(campus_sapd: Daemon) -> None:
    for name in PARAMETERS:
        with pytest.raises(ClientError) as refused:
            campus_sapd.get(f"/v1/sessions?{name}=a%00b")
        assert refused.value.status == 400, (name, refused.value)
        assert name in str(refused.value.body), (name, refused.value.body)
    with pytest.raises(ClientError) as refused:
        campus_sapd.get("/v1/sessions?attribute=x&value=a%00b")
    assert refused.value.status == 400 and "value" in str(refused.value.body)
    assert campus_sapd.get("/v1/health")["status"] == "ok"
    assert "Traceback" not in campus_sapd.logs()


def test_nul_in_a_session_id_is_not_found(campus_sapd: Daemon) -> None:
    with pytest.raises(ClientError) as refused:
        campus_sapd.get("/v1/sessions/a%00b")
    assert refused.value.status == 404, refused.value
    assert "Traceback" not in campus_sapd.logs()


def test_nul_in_a_lease_filter_is_a_400_naming_it(postgres_database: PostgresDatabase,
                                                  tmp_path: Path) -> None:
    """madcapd's GET /v1/leases on PostgreSQL: the same DataError came back as 503
    "lease store: ..." (the database blamed for a client's input)."""
    config = tmp_path / "m.toml"
    config.write_text(f'[store]\nbackend = "postgresql"\ndsn = "{postgres_database.dsn}"\n')
    daemon = Daemon("madcapd", tmp_path / "m", ["--listen", f"127.0.0.1:{free_udp_port()}",
                                                 "--config", str(config), "--sapd-socket",
                                                 str(tmp_path / "none.sock")])
    daemon.start(timeout=20)
    try:
        for name in ("client", "address", "lease_id", "scope", "state"):
            with pytest.raises(ClientError) as refused:
                daemon.get(f"/v1/leases?{name}=a%00b")
            assert refused.value.status == 400, (name, refused.value)
            assert name in str(refused.value.body)
        assert daemon.get("/v1/health")["status"] == "ok"
    finally:
        daemon.stop()
