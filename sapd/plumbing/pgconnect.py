"""How both daemons reach a PostgreSQL server: ``[store] dsn`` and the password.

The password comes from ``[store] password_file`` when set, else from what libpq reads
itself (PGPASSWORD, then the pgpass file, ``PGPASSFILE`` or ~/.pgpass); never from the
command line or the configuration file, which anyone on the host may read. Reads no clock
and imports no driver: the connection is the caller's.
"""

from __future__ import annotations

from sapd.plumbing.files import InputFileError, read_regular_file

PASSWORD_BYTES = 4096  # a password file holds one line, not a document
CONNECT_TIMEOUT = 3  # seconds: a server that does not answer is down, not slow


class PasswordFileError(ValueError):
    """``[store] password_file`` cannot be read, or holds no password."""


def read_password(path: str) -> str:
    """The first line of a password file, without its line end."""
    try:
        data = read_regular_file(path, PASSWORD_BYTES)
    except InputFileError as exc:
        raise PasswordFileError(f"[store] password_file {exc}") from None
    password = data.decode("utf-8", "replace").splitlines()[0] if data.strip() else ""
    if not password:
        raise PasswordFileError(f"[store] password_file {path}: empty")
    return password


def connection_options(dsn: str, password_file: str | None) -> dict[str, str]:
    """What to add to the DSN (psycopg.conninfo.make_conninfo): a connect timeout unless
    the DSN names one, and the password from its file (libpq's own sources otherwise)."""
    options: dict[str, str] = {}
    if "connect_timeout" not in dsn:
        options["connect_timeout"] = str(CONNECT_TIMEOUT)
    if password_file is not None:
        options["password"] = read_password(password_file)
    return options
