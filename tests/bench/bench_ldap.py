"""LDAP publication figure: 10,000 sessions into a real slapd (target <= 30 s).

Two paths, each from a store of 10,000 sessions into an empty base of a throw-away
slapd with the dds overlay (tests/ldap_server.py): the first resynchronisation (what a
starting sapd does), and the event path (10,000 committed changes arriving through the
hub's listener). Both include the TTL refresh each new dynamic entry gets.

Run: .venv/bin/python -m tests.bench.bench_ldap
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from sapd.bridges.ldap import LdapPublisher
from sapd.config import LdapConfig
from sapd.lifecycle import Event
from sapd.records import SessionRecord
from sapd.store.sqlite import SqliteDirectory
from tests.bench.common import report
from tests.ldap_server import BASE, SERVICE_DN, Slapd
from tests.packets import sdp_text
from tests.support import wait_for

SESSIONS = 10_000


def records(count: int) -> list[SessionRecord]:
    out = []
    for i in range(count):
        group = f"239.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        out.append(SessionRecord(
            id=f"{i:016x}", source="10.0.0.1", identity=f"- {i} IN IP4 10.0.0.1", version=1,
            msg_hash=i & 0xFFFF, origin_address="10.0.0.1", name=f"Session {i}", info=None,
            sdp=sdp_text(session=i, name=f"Session {i}", group=group), scope="ipv4-local",
            sap_group="239.255.255.255", first_seen=1.7e9, last_seen=1.7e9,
            groups=(group,), media_types=("audio",)))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish(workdir: Path, via_events: bool) -> tuple[float, float, float]:
    """Wall seconds, and CPU seconds of sapd's side and of slapd, for SESSIONS."""
    slapd = Slapd(workdir / "slapd").start()
    slapd.create_base()
    store_path = workdir / "directory.sqlite3"
    batch = records(SESSIONS)
    store = SqliteDirectory(store_path)
    if not via_events:
        store.upsert(batch)
    config = LdapConfig(url=slapd.url, base=BASE, bind_dn=SERVICE_DN,
                        password_file=str(slapd.password_file), ttl=300.0, queue=2 * SESSIONS)
    publisher = LdapPublisher(config, "bench", lambda: SqliteDirectory(store_path))
    try:
        if via_events:
            publisher.start()
            wait_for(lambda: publisher.resyncs.total() == 1, 30, what="first resync")
            store.upsert(batch)
            start = time.perf_counter()
            ours, theirs = time.process_time(), cpu_seconds(slapd.pid)
            for record in batch:
                publisher.on_event(Event("new", record.id, 0.0, record))
        else:
            start = time.perf_counter()
            ours, theirs = time.process_time(), cpu_seconds(slapd.pid)
            publisher.start()
        wait_for(lambda: len(publisher.published) == SESSIONS
                 and publisher.operations["refresh"] >= SESSIONS, 300, interval=0.05,
                 what="every session published")
        elapsed = time.perf_counter() - start
        ours, theirs = time.process_time() - ours, cpu_seconds(slapd.pid) - theirs
        assert slapd.count() == SESSIONS, slapd.count()
        assert not publisher.errors, publisher.errors
        return elapsed, ours, theirs
    finally:
        publisher.close()
        store.close()
        slapd.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, via_events in (("the first resync", False), ("committed events", True)):
            wall, ours, theirs = publish(Path(tmp) / label.replace(" ", "-"), via_events)
            report(f"LDAP: {SESSIONS:,} sessions by {label}", wall, "s", "<= 30 s")
            report("  CPU of sapd's publisher (process)", ours, "s")
            report("  CPU of slapd", theirs, "s")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
