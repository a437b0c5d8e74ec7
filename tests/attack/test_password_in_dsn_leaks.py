"""A password written into ``[store] dsn``: found by giving madcapd
``dsn = "host=db ... password=..."`` and stopping the database.

The configuration took it, though the file is readable by anyone on the host and the
README says the password never goes there; madcapd then named the whole DSN in every
store error: in /v1/health's ``store``, in GET /v1/leases' 503 and in its log, so the
password was shown to anyone who could read those. The configuration now refuses a
password in the DSN (naming ``dsn`` and where the password goes instead), and what
madcapd shows of a DSN leaves any password out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from madcap.config import load as load_madcapd
from sapd.config import load as load_sapd
from sapd.plumbing.config import ConfigError
from sapd.plumbing.pgconnect import shown_dsn


@pytest.mark.parametrize("dsn", [
    "host=db.example dbname=campus user=sapd password=hunter2",
    "host=db.example password = 'hunter2' dbname=campus",
    "postgresql://sapd:hunter2@db.example/campus",
    "postgres://sapd:hunter2@db.example:5432/campus?sslmode=require",
    "postgresql://db.example/campus?password=hunter2",
])
@pytest.mark.parametrize("load", [load_sapd, load_madcapd])
def test_password_in_the_dsn_is_refused_naming_dsn(tmp_path: Path, dsn: str,
                                                   load: object) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text(f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    with pytest.raises(ConfigError) as refused:
        load(str(path), {})  # type: ignore[operator]
    assert refused.value.key.endswith("dsn") and "password_file" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("dsn", ["host=db.example dbname=campus user=sapd",
                                 "postgresql://sapd@db.example/campus?sslmode=require"])
def test_dsn_without_a_password_still_loads(tmp_path: Path, dsn: str) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text(f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    assert load_sapd(str(path), {}).store.dsn == dsn


def test_what_is_shown_of_a_dsn_holds_no_password() -> None:
    assert "hunter2" not in shown_dsn("host=db password=hunter2 dbname=campus")
    assert "hunter2" not in shown_dsn("postgresql://u:hunter2@db/campus")
    assert shown_dsn("host=db dbname=campus") == "host=db dbname=campus"
