"""A real PostgreSQL 15 for the tests: Debian's initdb and pg_ctl in a temporary directory.

One server per test session (``postgres_server``), one fresh database per test
(``postgres_database``: ``CREATE DATABASE ... TEMPLATE``, so a test never sees another's
rows). Root cannot run postgres, so the cluster belongs to ``nobody``.

Where it listens: a Unix socket in its own directory (``socket_dir``; a process in a
network namespace reaches it too, the file system is shared) and TCP on a free port on
every address (``listen_addresses = '*'``), so that a namespace joined to the host by a
veth reaches it at the host end's address (see ``tcp_dsn``). The socket trusts; TCP
asks for the password (``PASSWORD``, scram-sha-256), so the password paths are real.

Under CI=true a missing PostgreSQL fails the test; elsewhere it skips (tests.support).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from madcap.store.postgresql import PostgresLeaseStore
from tests.support import free_tcp_port, missing

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "nobody"
SUPERUSER = "postgres"
PASSWORD = "sapd-test-password"
TEMPLATE = "sapd_template"
_databases = itertools.count()


def _as_owner() -> None:
    """preexec_fn: become the cluster's owner (postgres refuses to run as root)."""
    entry = pwd.getpwnam(OWNER)
    os.setgid(entry.pw_gid)
    os.setgroups([])
    os.setuid(entry.pw_uid)


class PostgresServer:
    """One cluster: ``start()``, ``stop()``, ``restart()`` (pg_ctl, fast shutdown)."""

    def __init__(self, root: Path, port: int | None = None, fsync: bool = False) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "postgres.log"
        self.port = port or free_tcp_port()
        self.fsync = fsync  # off in tests: a clean shutdown still writes everything
        self.running = False

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        as_root = os.geteuid() == 0
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                check=False, cwd=self.root,
                                preexec_fn=_as_owner if as_root else None)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: "
                               f"{result.stderr.strip()}\n{log}")
        return result

    def init(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(OWNER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o755)  # the socket directory must be reachable by clients
        password_file = self.root / "pwfile"
        password_file.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(password_file, pwd.getpwnam(OWNER).pw_uid, -1)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={password_file}", "-E", "UTF8", "--locale=C.UTF-8",
                  "--no-sync")
        password_file.unlink()
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            os.chown(self.socket_dir, pwd.getpwnam(OWNER).pw_uid, -1)
        settings = [
            "listen_addresses = '*'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            f"fsync = {'on' if self.fsync else 'off'}",
            "max_connections = 200",
            "shared_buffers = 64MB",
            "log_min_messages = warning",
        ]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join(settings) + "\n")
        with open(self.data / "pg_hba.conf", "a") as hba:  # TCP from any address (veths)
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n"
                      "host all all ::/0 scram-sha-256\n")

    def _pg_ctl(self, action: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-m", "fast", "-w", "-t", "60", action)

    def start(self) -> None:
        self._pg_ctl("start")
        self.running = True

    def stop(self) -> None:
        self._pg_ctl("stop")
        self.running = False

    def restart(self) -> None:
        self._pg_ctl("restart")
        self.running = True

    def dsn(self, dbname: str = "postgres") -> str:
        """Over the Unix socket (trusted: no password)."""
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={SUPERUSER}"

    def tcp_dsn(self, dbname: str = "postgres", host: str = "127.0.0.1") -> str:
        """Over TCP at ``host`` (any of this machine's addresses); the password is
        PASSWORD, to be given by a password file, PGPASSWORD or pgpass."""
        return f"host={host} port={self.port} dbname={dbname} user={SUPERUSER}"

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """One statement in autocommit (CREATE DATABASE cannot run in a transaction)."""
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t{os.getpid()}_{next(_databases)}"
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE}')
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> str | None:
    """Why the tests cannot start PostgreSQL here, or None."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return f"needs PostgreSQL 15 ({PG_BIN}/initdb; apt-get install postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            return f"needs the user {OWNER} to run postgres as (root cannot)"
    return None


@contextlib.contextmanager
def running_postgres(fsync: bool = False) -> Iterator[PostgresServer]:
    """A fresh cluster, started, with the template database; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="sapd-pg-"))
    server = PostgresServer(root, fsync=fsync)
    try:
        server.init()
        server.start()
        server.sql(f"CREATE DATABASE {TEMPLATE}")
        yield server
    finally:
        with contextlib.suppress(Exception):
            if server.running:
                server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class PostgresDatabase:
    """A fresh database of its own on the session's server."""

    server: PostgresServer
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def tcp_dsn(self, host: str = "127.0.0.1") -> str:
        return self.server.tcp_dsn(self.name, host)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        return self.server.sql(statement, self.name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = postgres_available()
    if reason is not None:
        missing(reason)
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    if not postgres_server.running:  # a test stopped it and failed before starting it
        postgres_server.start()
    name = postgres_server.create_database()
    yield PostgresDatabase(postgres_server, name)
    if not postgres_server.running:
        postgres_server.start()
    postgres_server.drop_database(name)


@pytest.fixture
def two_lease_stores(postgres_database: PostgresDatabase) -> Iterator[list[PostgresLeaseStore]]:
    """Two madcapd's lease stores on one fresh database (two servers, one campus)."""
    stores = [PostgresLeaseStore(postgres_database.dsn) for _ in range(2)]
    yield stores
    for store in stores:
        store.close()
