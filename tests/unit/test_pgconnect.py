"""How sapd reaches PostgreSQL: the password file's first line (never an empty one or a
FIFO), a connect timeout unless the DSN names one; and what a psycopg error means to the
hub (passing: held and retried; about a value: bisected)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerrors

from sapd.plumbing.pgconnect import PasswordFileError, connection_options, read_password
from sapd.store.failures import classify


def test_the_password_is_the_files_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret \nignored\n")
    assert read_password(str(path)) == "s3cret "
    assert connection_options("host=db", str(path)) == {"connect_timeout": "3",
                                                         "password": "s3cret "}
    assert connection_options("host=db connect_timeout=9", None) == {}


@pytest.mark.parametrize("content", [b"", b"\n\n", None])
def test_an_empty_missing_or_odd_password_file_is_named(tmp_path: Path,
                                                        content: bytes | None) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PasswordFileError, match=r"\[store\] password_file .*pw"):
        read_password(str(path))


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(PasswordFileError, match="not a regular file"):
        read_password(str(fifo))


@pytest.mark.parametrize(("error", "verdict"), [
    (psycopg.OperationalError("connection refused"), ("database_unreachable", True)),
    (psycopg.InterfaceError("the connection is closed"), ("database_unreachable", True)),
    (pgerrors.DiskFull("no space"), ("disk_full", True)),
    (pgerrors.DeadlockDetected("deadlock"), ("locked", True)),
    (pgerrors.ReadOnlySqlTransaction("standby"), ("read_only", True)),
    (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
     ("unstorable_value", False)),
    (pgerrors.UniqueViolation("duplicate"), ("constraint", False)),
])
def test_what_a_postgresql_failure_means_to_the_hub(error: Exception,
                                                    verdict: tuple[str, bool]) -> None:
    assert classify(error) == verdict
