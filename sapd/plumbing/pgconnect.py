"""How both daemons reach a PostgreSQL server: ``[store] dsn`` and the password.

The password comes from ``[store] password_file`` when set, else from what libpq reads
itself (PGPASSWORD, then the pgpass file, ``PGPASSFILE`` or ~/.pgpass); never from the
command line or the configuration file, which anyone on the host may read. Reads no clock
and imports no driver: the connection is the caller's.
"""

from __future__ import annotations

import re
import urllib.parse

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


# libpq's key=value form: password = value, the value bare or single-quoted
_PASSWORD_PAIR = re.compile(r"(?:^|(?<=\s))password\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S*)\s*",
                            re.IGNORECASE)


def _is_url(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


def dsn_has_password(dsn: str) -> bool:
    """Does the DSN carry a password (key=value, URL user info or ?password=)?"""
    if _is_url(dsn):
        url = urllib.parse.urlsplit(dsn)
        return url.password is not None or any(
            k.lower() == "password" for k, _ in urllib.parse.parse_qsl(url.query))
    return _PASSWORD_PAIR.search(dsn) is not None


def shown_dsn(dsn: str) -> str:
    """The DSN as errors, logs and health show it: without any password."""
    if not dsn_has_password(dsn):
        return dsn
    if _is_url(dsn):
        url = urllib.parse.urlsplit(dsn)
        host = url.netloc.rpartition("@")[2]
        user = f"{url.username}@" if url.username else ""
        query = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(url.query)
                                        if k.lower() != "password"])
        return urllib.parse.urlunsplit((url.scheme, user + host, url.path, query, ""))
    return _PASSWORD_PAIR.sub("", dsn).strip()
