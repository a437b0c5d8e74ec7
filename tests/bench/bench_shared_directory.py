"""sapd's stored-new rate on PostgreSQL beside SQLite, one run (issue 18: >= 5,000/s).

- in process: the daemon's pipeline without the socket (engine on this thread, the store
  process behind the writer, a batch per 1,000 datagrams), median of three runs per
  backend, SQLite and PostgreSQL alternating;
- a fresh sapd on each backend sent 50,000 new announcements at 10,000/s on loopback:
  stored fraction, and stored per second from the first datagram to the last commit.

PostgreSQL is the tests' own (tests/postgres.py: initdb + pg_ctl as nobody, Unix socket)
with fsync on, so a commit is as durable as the server makes it.

Run by hand, alone: flock /work/bench.lock .venv/bin/python -m tests.bench.bench_shared_directory
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sapd.lifecycle import Engine, Limits
from sapd.plumbing import service
from sapd.store.postgresql import PostgresDirectory
from sapd.store.sqlite import SqliteDirectory
from sapd.store.writer import PostgresTarget, StoreWriter
from tests.bench.bench_receive import BURST_RATE, GROUP, PORT, _daemon, fill
from tests.bench.common import report
from tests.packets import announce, sdp_text
from tests.postgres import PostgresServer, running_postgres

RUNS = 3
TOTAL = 50_000


def _packets(total: int) -> list[bytes]:
    return [announce(sdp_text(session=i, name=f"S{i}", group=f"239.255.{i >> 8 & 255}."
                              f"{i & 255}")) for i in range(total)]


def stored_per_second(target: Path | PostgresTarget, packets: list[bytes]) -> float:
    service.tune_collector()
    loop = asyncio.new_event_loop()
    writer = StoreWriter(target, loop)
    engine = Engine(limits=Limits(source_rate=1e9, source_burst=1e9, max_sessions=10**6))
    engine.site = "bench"
    start = time.perf_counter()
    for base in range(0, len(packets), 1000):
        for pkt in packets[base:base + 1000]:
            engine.receive_datagram(pkt, 1.0)
        writer.submit(engine.take_writes())
        while engine.next_event():
            pass
    writer.close()  # waits until everything is committed
    elapsed = time.perf_counter() - start
    loop.close()
    return len(packets) / elapsed


def _sqlite_once(packets: list[bytes]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.sqlite3"
        SqliteDirectory(path).close()  # created, as the daemon does
        rate = stored_per_second(path, packets)
        check = SqliteDirectory(path)
        assert check.count() == len(packets), check.count()
        check.close()
        return rate


def _postgres_once(server: PostgresServer, packets: list[bytes], run: int) -> float:
    name = server.create_database(f"bench{run}")
    try:
        dsn = server.dsn(name)
        PostgresDirectory(dsn, "bench").close()  # migrated, as the daemon's reader does
        rate = stored_per_second(PostgresTarget(dsn, "bench", None, 30.0, 1.0), packets)
        check = PostgresDirectory(dsn, "bench", migrate=False)
        assert check.count() == len(packets), check.count()
        check.close()
        return rate
    finally:
        server.drop_database(name)


def _daemon_burst(tmp: Path, store: str, label: str) -> None:
    config = tmp / f"{label}.toml"
    config.write_text(f"port = {PORT}\ngroups = ['{GROUP}']\nsite = \"bench\"\n"
                      "[limits]\nsource_rate = 1000000.0\nsource_burst = 1000000.0\n"
                      f"max_sessions = 200000\n{store}")
    daemon = _daemon(tmp / label, config)
    daemon.start()
    try:
        batch = [announce(sdp_text(session=i, name=f"Stream {i} room {i % 97}",
                                   group=f"239.255.{i >> 8 & 255}.{i & 255}"),
                          source=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
                 for i in range(TOTAL)]
        stored, took = fill(daemon, batch, BURST_RATE)
        report(f"{label}: fresh sapd, {TOTAL:,} new at {BURST_RATE:,}/s: stored",
               stored / TOTAL, "fraction")
        report(f"{label}:   stored per second, first datagram to last commit",
               stored / took, "/s", ">= 5,000" if label == "postgresql" else "")
    finally:
        daemon.stop()


def main() -> None:
    print(f"{'figure':58} {'value':>14} {'unit':10} target")
    packets = _packets(TOTAL)
    with running_postgres(fsync=True) as server:
        sqlite_rates, postgres_rates = [], []
        for run in range(RUNS):
            sqlite_rates.append(_sqlite_once(packets))
            postgres_rates.append(_postgres_once(server, packets, run))
        sqlite_rate = statistics.median(sqlite_rates)
        postgres_rate = statistics.median(postgres_rates)
        report(f"sqlite: new stored per second in process, median of {RUNS}", sqlite_rate,
               "/s")
        report(f"postgresql: new stored per second in process, median of {RUNS}",
               postgres_rate, "/s", ">= 5,000")
        report("  postgresql / sqlite (same run)", postgres_rate / sqlite_rate, "x")
        with tempfile.TemporaryDirectory() as tmp:
            _daemon_burst(Path(tmp), "", "sqlite")
            name = server.create_database("bench_daemon")
            _daemon_burst(Path(tmp), f'[store]\nbackend = "postgresql"\n'
                                     f'dsn = "{server.dsn(name)}"\n', "postgresql")
            server.drop_database(name)


if __name__ == "__main__":
    main()
