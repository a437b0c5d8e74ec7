"""``[store] backend``: one factory picks the lease store; an unknown name is refused
naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from madcap.config import load
from madcap.leases import LeaseStoreError
from madcap.store import BACKENDS, open_lease_store
from sapd.plumbing.config import ConfigError


def test_sqlite_is_the_default_of_two_backends(tmp_path: Path) -> None:
    config = load(None, {})
    assert config.store.backend == "sqlite" and BACKENDS == ("sqlite", "postgresql")
    store = open_lease_store(config.store.backend, tmp_path)
    assert store.backend == "sqlite" and (tmp_path / "leases.sqlite3").exists()
    store.close()


def test_unknown_backend_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[store]\nbackend = "postgresql"\ndsn = "host=db"\n')
    assert load(str(path), {}).store.dsn == "host=db"
    path.write_text('[store]\nbackend = "mysql"\n')
    with pytest.raises(ConfigError, match=r"store\.backend"):
        load(str(path), {})


def test_a_file_that_is_no_database_is_a_named_store_error(tmp_path: Path) -> None:
    (tmp_path / "leases.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(LeaseStoreError, match=r"corrupt: .*leases\.sqlite3"):
        open_lease_store("sqlite", tmp_path)
